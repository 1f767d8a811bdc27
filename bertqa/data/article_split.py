"""Splitting a SQuAD file by article, never by question, so that no paragraph is on two sides.

Three splits: `train`; `eval`, the articles the pipeline blesses on (optionally only their first
paragraphs, so that an eval split spans several topics at a cost that suits a pipeline run); and
`heldout`, the rest of those same articles' paragraphs. A held-out split is never trained on, and
never blessed or tuned on either: the figure for judging a recipe, when the eval split is too small
to tell two recipes apart. With the last 14 articles of SQuAD v1.1 train and 8 paragraphs, eval is
the 582 questions of data/sample/eval.json and heldout the other 2,146 questions of those articles.

The articles can be chosen by title, as the last N of the file, or by a share of titles picked by
hashing each title (a split that stays the same when the file gains or loses other articles).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib


@dataclasses.dataclass(frozen=True)
class ArticleSplit:
    """Which articles are held out of training; exactly one of the three choices is set."""
    eval_titles: tuple[str, ...] = ()
    eval_articles: int | None = None  # the last N articles of the file
    eval_share: float | None = None  # articles whose title hashes below this share (0 < share < 1)
    eval_max_paragraphs: int | None = None  # eval keeps these first paragraphs; the rest go to heldout

    def __post_init__(self) -> None:
        chosen = sum(bool(choice) for choice in (self.eval_titles, self.eval_articles, self.eval_share))
        if chosen != 1:
            raise ValueError("choose the eval articles one way: by titles, as the last N, or as a share")
        if self.eval_share is not None and not 0 < self.eval_share < 1:
            raise ValueError(f"the eval share must be between 0 and 1, not {self.eval_share}")
        if self.eval_max_paragraphs is not None and self.eval_max_paragraphs < 1:
            raise ValueError(f"eval_max_paragraphs must be at least 1, not {self.eval_max_paragraphs}")


def title_share(title: str) -> float:
    """A title's place in [0, 1): the first 8 bytes of its SHA-256, the same on every machine and run."""
    return int.from_bytes(hashlib.sha256(title.encode("utf-8")).digest()[:8], "big") / 2 ** 64


def fallback_title(index: int, article: dict) -> str:
    """A stable article name: its document_id (COVID-QA keeps one per paragraph), else its index."""
    ids = [article.get("document_id")]
    if ids == [None] and isinstance(article.get("paragraphs"), list):
        ids = [p.get("document_id") if isinstance(p, dict) else None for p in article["paragraphs"]]
    # Only a string or an integer names an article: a list or an object is not even
    # hashable (a set of them raised TypeError), and True, an int to Python, is no id.
    if ids and all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in ids) and len(set(ids)) == 1:
        return str(ids[0])
    return f"article-{index}"


def article_title(index: int, article: dict) -> str:
    """The article's title, or the name bertqa.data.squad_io gives an article without one."""
    title = article.get("title")
    return title if isinstance(title, str) else fallback_title(index, article)


def split_articles(articles: list[dict], split: ArticleSplit, source: str = "the file") -> dict[str, list[dict]]:
    """{"train": [...], "eval": [...], "heldout": [...]}: articles (dicts of SQuAD's `data` list)."""
    titles = [article_title(index, article) for index, article in enumerate(articles)]
    if split.eval_titles:
        missing = sorted(set(split.eval_titles) - set(titles))
        if missing:
            raise ValueError(f"{source} has no article titled {', '.join(missing)}")
        held = [a for a, title in zip(articles, titles, strict=True) if title in split.eval_titles]
    elif split.eval_articles:
        if not 0 < split.eval_articles < len(articles):
            raise ValueError(f"{source} has {len(articles)} articles; the eval articles must be between 1 and "
                             f"{len(articles) - 1}")
        held = articles[-split.eval_articles:]
    else:
        held = [a for a, title in zip(articles, titles, strict=True) if title_share(title) < split.eval_share]
        if not held or len(held) == len(articles):
            raise ValueError(f"{source}: a share of {split.eval_share} puts {len(held)} of its {len(articles)} "
                             "articles in eval; choose another share")
    held_ids = {id(a) for a in held}
    train = [a for a in articles if id(a) not in held_ids]
    limit = split.eval_max_paragraphs
    evaluation = [{**a, "paragraphs": a["paragraphs"][:limit]} for a in held] if limit else held
    heldout = [{**a, "paragraphs": a["paragraphs"][limit:]} for a in held if limit and a["paragraphs"][limit:]]
    return {"train": train, "eval": evaluation, "heldout": heldout}


def question_count(articles: list[dict]) -> int:
    return sum(len(paragraph["qas"]) for article in articles for paragraph in article["paragraphs"])


def write_split_files(squad_file: str, split: ArticleSplit, out_dir: str) -> dict[str, tuple[pathlib.Path, list[dict]]]:
    """Writes train.json, eval.json and (when it has questions) heldout.json, each with the input's `version`.

    Returns {split name: (its file, its articles)}. ValueError (json's included) or KeyError for a file
    this cannot split.
    """
    squad = json.loads(pathlib.Path(squad_file).read_text(encoding="utf-8"))
    return write_parts(split_articles(squad["data"], split, source=squad_file), squad.get("version", "1.1"), out_dir)


def write_parts(parts: dict[str, list[dict]], version: str, out_dir: str) -> dict[str, tuple[pathlib.Path, list[dict]]]:
    """Writes <name>.json for each part that has articles; {name: (its file, its articles)}."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, part in parts.items():
        if part:
            path = out / f"{name}.json"
            path.write_text(json.dumps({"version": version, "data": part}, ensure_ascii=False), encoding="utf-8")
            written[name] = (path, part)
    return written

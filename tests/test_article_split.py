"""Splitting SQuAD files by article (bertqa.data.article_split, scripts/split_by_article.py)."""

import json
import subprocess
import sys

import pytest

from bertqa.data import article_split


def _article(title, paragraphs, questions_each=2, **extra):
    return {**({"title": title} if title is not None else {}), **extra, "paragraphs": [
        {"context": f"{title} paragraph {p}.", "qas": [
            {"id": f"{title}-{p}-{q}", "question": "?", "answers": [{"text": "paragraph", "answer_start": 0}]}
            for q in range(questions_each)]} for p in range(paragraphs)]}


ARTICLES = [_article(f"A{i}", paragraphs=3 + i % 3) for i in range(12)]


def _titles(articles):
    return [a["title"] for a in articles]


def test_the_last_articles_are_eval_with_their_first_paragraphs_and_the_rest_of_them_is_heldout():
    splits = article_split.split_articles(ARTICLES, article_split.ArticleSplit(eval_articles=3, eval_max_paragraphs=2))
    assert _titles(splits["train"]) == [f"A{i}" for i in range(9)]
    assert _titles(splits["eval"]) == ["A9", "A10", "A11"]
    assert [len(a["paragraphs"]) for a in splits["eval"]] == [2, 2, 2]
    # A9, A10, A11 have 3, 4, 5 paragraphs: 1, 2 and 3 are held out, never eval and never train.
    assert [len(a["paragraphs"]) for a in splits["heldout"]] == [1, 2, 3]
    ids = {name: {q["id"] for a in part for p in a["paragraphs"] for q in p["qas"]} for name, part in splits.items()}
    assert not ids["train"] & ids["eval"] and not ids["train"] & ids["heldout"] and not ids["eval"] & ids["heldout"]
    assert sum(map(len, ids.values())) == article_split.question_count(ARTICLES)


def test_without_a_paragraph_limit_there_is_no_heldout_split():
    splits = article_split.split_articles(ARTICLES, article_split.ArticleSplit(eval_titles=("A2", "A5")))
    assert _titles(splits["eval"]) == ["A2", "A5"] and splits["heldout"] == []
    assert len(splits["train"]) == 10


def test_a_share_of_titles_is_chosen_by_hash_the_same_whatever_else_the_file_holds():
    share = article_split.ArticleSplit(eval_share=0.4)
    chosen = _titles(article_split.split_articles(ARTICLES, share)["eval"])
    assert 0 < len(chosen) < len(ARTICLES)
    assert chosen == [t for t in _titles(ARTICLES) if article_split.title_share(t) < 0.4]
    # Another file with half the articles: the ones both files have are on the same side.
    fewer = _titles(article_split.split_articles(ARTICLES[::2], share)["eval"])
    assert fewer == [t for t in chosen if t in _titles(ARTICLES[::2])]


def test_articles_without_a_title_are_named_as_squad_io_names_them():
    # COVID-QA: no title; each article's paragraphs share a document_id.
    articles = [_article(None, 1, document_id=1000 + i) for i in range(6)]
    for a, i in zip(articles, range(6), strict=True):
        a["paragraphs"][0]["document_id"] = 1000 + i
        del a["document_id"]
    splits = article_split.split_articles(articles, article_split.ArticleSplit(eval_titles=("1003",)))
    assert [a["paragraphs"][0]["document_id"] for a in splits["eval"]] == [1003]


@pytest.mark.parametrize("split, message", [
    (dict(eval_articles=12), "has 12 articles; the eval articles must be between 1 and 11"),
    (dict(eval_titles=("Nowhere",)), "has no article titled Nowhere"),
    (dict(eval_share=1e-9), "choose another share"),
])
def test_an_impossible_split_is_refused_naming_the_file(split, message):
    with pytest.raises(ValueError, match=message) as refused:
        article_split.split_articles(ARTICLES, article_split.ArticleSplit(**split), source="squad.json")
    assert str(refused.value).startswith("squad.json")


def test_a_split_must_be_chosen_one_way():
    with pytest.raises(ValueError, match="one way"):
        article_split.ArticleSplit(eval_articles=2, eval_share=0.5)
    with pytest.raises(ValueError, match="one way"):
        article_split.ArticleSplit()


def test_the_script_writes_the_three_files_and_refuses_in_one_line(tmp_path):
    source = tmp_path / "squad.json"
    source.write_text(json.dumps({"version": "1.1", "data": ARTICLES}))
    script = ["scripts/split_by_article.py", str(source), "--out-dir", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, *script, "--eval-articles", "2", "--eval-max-paragraphs", "1"],
                          capture_output=True, text=True, check=True)
    assert len(done.stdout.splitlines()) == 3
    for name, questions in (("train", 2 * sum(3 + i % 3 for i in range(10))), ("eval", 4), ("heldout", 2 * (3 + 4))):
        written = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert written["version"] == "1.1" and article_split.question_count(written["data"]) == questions, name
    refused = subprocess.run([sys.executable, *script, "--eval-titles", "Nowhere"], capture_output=True, text=True)
    assert refused.returncode != 0
    assert refused.stderr.strip() == f"error: {source} has no article titled Nowhere"


def test_the_covid_transfer_split_keeps_its_heldout_articles_out_of_both_pipeline_splits(tmp_path):
    """scripts/covid_transfer.py: heldout.json by title hash, the fine-tuning runs' eval split the last
    PIPELINE_EVAL_ARTICLES of the others, every question in exactly one file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("covid_transfer", "scripts/covid_transfer.py")
    covid_transfer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(covid_transfer)
    articles = [_article(None, paragraphs=1, questions_each=3, document_id=f"doc{i}") for i in range(30)]
    for i, article in enumerate(articles):  # COVID-QA's articles have no title and distinct question ids
        for q in article["paragraphs"][0]["qas"]:
            q["id"] = f"{i}-{q['id']}"
    source = tmp_path / "covid.json"
    source.write_text(json.dumps({"version": "0.1", "data": articles}))
    covid_transfer.write_covid_splits(str(source), 0.3, tmp_path / "data")
    files = {name: json.loads((tmp_path / "data" / f"{name}.json").read_text())
             for name in ("train", "eval", "heldout")}
    ids = {name: {a["document_id"] for a in f["data"]} for name, f in files.items()}
    expected_heldout = {f"doc{i}" for i in range(30) if article_split.title_share(f"doc{i}") < 0.3}
    assert ids["heldout"] == expected_heldout
    others = [f"doc{i}" for i in range(30) if f"doc{i}" not in expected_heldout]
    assert sorted(ids["eval"]) == sorted(others[-covid_transfer.PIPELINE_EVAL_ARTICLES:])
    assert ids["train"] == set(others[:-covid_transfer.PIPELINE_EVAL_ARTICLES])
    assert sum(article_split.question_count(f["data"]) for f in files.values()) == 90
    assert {f["version"] for f in files.values()} == {"0.1"}


def test_the_covid_transfer_split_is_reused_only_for_the_same_heldout_share(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("covid_transfer", "scripts/covid_transfer.py")
    covid_transfer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(covid_transfer)
    source = tmp_path / "covid.json"
    source.write_text(json.dumps({"version": "0.1", "data": [
        _article(f"doc{i}", paragraphs=1) for i in range(30)]}))
    data_dir = tmp_path / "data"
    covid_transfer.prepare_covid_splits(str(source), 0.3, data_dir)
    heldout = (data_dir / "heldout.json").read_text()
    covid_transfer.prepare_covid_splits(str(source), 0.3, data_dir)  # the same share: kept as written
    assert (data_dir / "heldout.json").read_text() == heldout
    with pytest.raises(SystemExit) as refused:
        covid_transfer.prepare_covid_splits(str(source), 0.5, data_dir)
    assert str(refused.value) == (f"error: {data_dir / 'heldout.json'} does not hold the questions that "
                                  f"--heldout-share 0.5 holds out of {source}: "
                                  "use another --runs-dir for another split")
    assert (data_dir / "heldout.json").read_text() == heldout

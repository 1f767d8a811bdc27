"""Synthetic SQuAD spans that a tiny model learns in seconds: for the end-to-end tests.

Each question asks for the code word of a short paragraph ("... the code word is otter.
..."). A 2-layer, 32-wide encoder learns to point at the word after "code word is" within a
few hundred steps, so a retrained model measurably keeps (or loses) what it knew: with
`shuffle_labels`, every training answer points at a random other word of its paragraph,
which teaches the model nothing but noise.

`with_code_words` adds such questions to a SQuAD file (the tiny fixtures' tiny_train.json), so
that the model trained on it answers `QUESTION` about contexts it never saw (`UNSEEN`);
`assert_answers_code_words` checks that it does. Measured on tiny_train.json with
CODE_WORD_QUESTIONS added, batches of 16: the pipeline's Trainer answers both UNSEEN contexts
after 40 steps and not after 25; Model Maker's API answers them (and two more) after 40 steps.
The tests train 120.
"""

from __future__ import annotations

import json
import pathlib
import random

ANSWERS = ("otter", "falcon", "tiger", "rabbit", "eagle", "salmon", "wolf", "spider", "camel", "horse", "zebra",
           "turtle", "lion", "whale", "shark", "monkey", "donkey", "goat", "sheep", "pig", "duck", "goose",
           "mouse", "snake", "frog", "bear", "deer", "fox", "owl", "crow")
FILLER = ("the river ran past an old mill near the town", "many people walked along the road in the morning",
          "a small boat crossed the lake before noon", "the market opened early and closed late",
          "children played in the park after school", "the bridge was painted red last summer",
          "a train left the station at nine", "the library holds books from many countries",
          "farmers sold bread and cheese on the square", "the weather turned cold during the night")
QUESTION = "What is the code word?"
CODE_WORD_QUESTIONS = 100  # added to tiny_train.json by write_learnable_tiny_data
# (context, its code word): paragraphs no training file has. "lantern" is no training answer: the
# model reads the word after "code word is" rather than picking one of the animals it was taught.
UNSEEN = (("The river ran past an old mill near the town. The code word is falcon. A train left at nine.", "falcon"),
          ("The code word is lantern. Children played in the park after school.", "lantern"))


def _paragraph(rng: random.Random, index: int, shuffle_labels: bool) -> dict:
    answer = rng.choice(ANSWERS)
    sentences = rng.sample(FILLER, 4)
    sentences.insert(rng.randrange(5), f"the code word is {answer}")
    context = ". ".join(s.capitalize() for s in sentences) + "."
    start = context.index(f"is {answer}.") + 3
    text = answer
    if shuffle_labels:
        words = [(w.strip("."), i) for i, w in _word_starts(context) if w.strip(".") != answer]
        text, start = rng.choice(words)
    return {"context": context, "qas": [{"id": f"q{index}", "question": "What is the code word?",
                                         "answers": [{"text": text, "answer_start": start}]}]}


def _word_starts(text: str):
    position = 0
    for word in text.split(" "):
        yield position, word
        position += len(word) + 1


def squad_document(seed: int, questions: int, shuffle_labels: bool = False) -> dict:
    rng = random.Random(seed)
    paragraphs = [_paragraph(rng, seed * 10000 + i, shuffle_labels) for i in range(questions)]
    # Articles of 10 paragraphs, so a hash split by title would have something to split.
    articles = [{"title": f"Article_{seed}_{i}", "paragraphs": paragraphs[i:i + 10]}
                for i in range(0, len(paragraphs), 10)]
    return {"version": "1.1", "data": articles}


def write_span(data_dir: pathlib.Path, span: int, train_questions: int = 200, eval_questions: int = 40,
               shuffle_labels: bool = False) -> pathlib.Path:
    """data_dir/span-N/train.json and eval.json; eval answers are always right."""
    folder = data_dir / f"span-{span}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(squad_document(span * 2, train_questions, shuffle_labels)))
    (folder / "eval.json").write_text(json.dumps(squad_document(span * 2 + 1, eval_questions)))
    return folder


def with_code_words(document: dict, questions: int, seed: int = 99) -> dict:
    """A copy of the SQuAD `document` with `questions` code-word questions added, in articles of their own."""
    return {**document, "data": [*document["data"], *squad_document(seed, questions)["data"]]}


def write_learnable_tiny_data(fixtures_dir: pathlib.Path, data_dir: pathlib.Path) -> pathlib.Path:
    """data_dir/tiny_train.json (the fixture's 15 questions and CODE_WORD_QUESTIONS more) and tiny_eval.json."""
    data_dir.mkdir(parents=True, exist_ok=True)
    train = json.loads((fixtures_dir / "tiny_train.json").read_text())
    (data_dir / "tiny_train.json").write_text(json.dumps(with_code_words(train, CODE_WORD_QUESTIONS)))
    (data_dir / "tiny_eval.json").write_bytes((fixtures_dir / "tiny_eval.json").read_bytes())
    return data_dir


def assert_answers_code_words(answer) -> None:
    """`answer(context, QUESTION)` -> the best answer's text (None for no answer) gives each UNSEEN code word.

    The Task Library returns whole space-separated words of the context, so a word comes with the
    period that follows it; the SavedModel returns the span itself.
    """
    answers = {word: answer(context, QUESTION) for context, word in UNSEEN}
    assert {word: (text or "").rstrip(".") for word, text in answers.items()} == {word: word for word in answers}, (
        f"the trained model's answers to {QUESTION!r}: {answers}")

"""Answering a question with an exported .tflite in LiteRT, as an app on LiteRT does it.

The Task Library's BertQuestionAnswerer tokenizes, windows and decodes spans inside its own
2023 runtime. An app on LiteRT (ai-edge-litert in Python; LiteRT in Google Play services or
its AAR on Android) runs only the model, so the rest is the app's: here it is this project's
own code, the same WordPiece tokenizer (the vocabulary packed in the file), doc-stride windows
and n-best span decoding the evaluation uses, around LiteRT's interpreter. An app does the same
with its platform's WordPiece tokenizer: inputs `input_word_ids`, `input_mask`,
`input_type_ids` int32 [1, seq_len] ([CLS] question [SEP] context [SEP], zero-padded), outputs
`start_logits`, `end_logits` float32 [1, seq_len]. The file has one signature per window length
(`seq_384`, `seq_320`, ..., `seq_128`): an app runs each window at the smallest that holds it, as
this class does (bertqa.on_device.signatures).

The Task Library keeps one window per question (the first 384 tokens); this path windows the
whole context, so on long contexts it can find answers the Task Library cannot see. Answers are
widened to the whole words they cut into, as the Task Library shows them.
"""

from __future__ import annotations

import tempfile

from bertqa.data import windowing
from bertqa.data.raw_example import SquadExample
from bertqa.data.tokenization import TokenizerConfig, cached_tokenizer
from bertqa.model import evaluation, postprocess
from bertqa.on_device import task_metadata
from bertqa.on_device.runtime import DEFAULT_RUNTIME, TfliteQaRunner

# What the Task Library uses (tflite-support's bert_question_answerer.cc: kMaxQueryLen,
# kMaxAnswerLength 32 tokens, lower case), so that both paths are asked the same.
QUERY_LEN = 64
MAX_ANSWER_LENGTH = 32


class LiteRtAnswerer:
    """answer(context, question) -> [(text, score)] from a .tflite run in LiteRT (or `runtime`).

    `vocab_path` None takes the vocabulary packed in the file's Task Library metadata. The score
    is start logit + end logit, as the Task Library's `pos.logit`.
    """

    def __init__(self, tflite_path: str, vocab_path: str | None = None, do_lower_case: bool = True,
                 query_len: int = QUERY_LEN, max_answer_length: int = MAX_ANSWER_LENGTH, num_threads: int = 1,
                 runtime: str = DEFAULT_RUNTIME, lengths: tuple[int, ...] | None = None):
        self._runner = TfliteQaRunner(tflite_path, num_threads=num_threads, runtime=runtime, lengths=lengths)
        self._scratch = None
        if vocab_path is None:
            # The tokenizer reads a vocabulary file; the file's packed vocab.txt is written out once.
            self._scratch = tempfile.TemporaryDirectory(prefix="bertqa-vocab-")
            vocab_path = task_metadata.unpack_vocab(tflite_path, self._scratch.name)
        self._tokenizer = cached_tokenizer(TokenizerConfig(vocab_path, do_lower_case))
        self._window = windowing.WindowConfig(seq_len=self._runner.seq_len, query_len=query_len)
        # Whole words, as the Task Library answers: what an app shows its user.
        self._postprocess = postprocess.PostprocessConfig(max_answer_length=max_answer_length, whole_words=True)

    def answer(self, context: str, question: str, top_k: int = 1) -> list[tuple[str, float]]:
        return [(text, score) for text, _, _, score in self.answer_spans(context, question, top_k)]

    def answer_spans(self, context: str, question: str, top_k: int = 1) -> list[tuple[str, int, int, float]]:
        """[(text, start, end, score)], best first: context[start:end] == text (offsets in code points),
        for an app that highlights the answer in the context."""
        example = SquadExample(id="question", title="", context=context, question=question)
        windows, _ = windowing.make_windows([example], self._tokenizer, self._window, is_training=False)
        if not windows:
            return []
        # Each window at the smallest of the file's signatures that holds it (the runner pads to it).
        starts, ends = evaluation.predict_logits(self._runner.run, windows, batch_size=1)
        predictions = postprocess.compute_predictions([example], windows, starts, ends, self._postprocess)
        nbest = [entry for entry in predictions.nbest.get(example.id, []) if entry["text"]]
        return [(entry["text"], entry["start_char"], entry["end_char"],
                 float(entry["start_logit"] + entry["end_logit"])) for entry in nbest[:top_k]]


def answer_with_litert(tflite_path: str, context: str, question: str, top_k: int = 1) -> list[tuple[str, float]]:
    return LiteRtAnswerer(tflite_path).answer(context, question, top_k)

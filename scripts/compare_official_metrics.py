"""Check bertqa.model.squad_metrics against a line-by-line re-implementation of the official scripts.

    python scripts/compare_official_metrics.py DATA.json predictions.json [--null-odds null_odds.json]

Prints the project's metrics beside those of `evaluate-v1.1.py` / `evaluate-v2.0.py`
(re-written below, function for function, from the official scripts) and exits 1
if the keys differ or any value differs by more than 1e-9. The official scripts
read the raw JSON while the project reads it through bertqa.data.squad_io, so a file
with dropped questions may differ for that reason alone: the script says so.
The SQuAD version comes from the file's `version` key unless --version is given.

On a `make run`'s predictions (SquadEvaluator's evaluation artifact):

    python scripts/compare_official_metrics.py data/sample/eval.json PREDICTIONS
    (PREDICTIONS: runs/bertqa/artifacts/SquadEvaluator/evaluation/<id>/predictions.json)

docs/metrics.md quotes the one comparison recorded so far, with its date and commit.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import string
import sys

from bertqa.data import squad_io
from bertqa.model import squad_metrics

TOLERANCE = 1e-9


# ---- evaluate-v1.1.py -------------------------------------------------------------
# The one change in both: ids go through str(), since some files (COVID-QA) have
# integer ids while predictions.json keys are always strings.


def official_normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def official_v1_f1_score(prediction, ground_truth):
    prediction_tokens = official_normalize_answer(prediction).split()
    ground_truth_tokens = official_normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def official_v1_exact_match_score(prediction, ground_truth):
    return official_normalize_answer(prediction) == official_normalize_answer(ground_truth)


def official_v1_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


def official_v1_evaluate(dataset, predictions):
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if str(qa["id"]) not in predictions:
                    print(f"Unanswered question {qa['id']} will receive score 0.", file=sys.stderr)
                    continue
                ground_truths = [x["text"] for x in qa["answers"]]
                prediction = predictions[str(qa["id"])]
                exact_match += official_v1_metric_max_over_ground_truths(
                    official_v1_exact_match_score, prediction, ground_truths
                )
                f1 += official_v1_metric_max_over_ground_truths(
                    official_v1_f1_score, prediction, ground_truths
                )
    exact_match = 100.0 * exact_match / total
    f1 = 100.0 * f1 / total
    return {"exact_match": exact_match, "f1": f1}


# ---- evaluate-v2.0.py -------------------------------------------------------------


def official_v2_make_qid_to_has_ans(dataset):
    qid_to_has_ans = {}
    for article in dataset:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                qid_to_has_ans[str(qa["id"])] = bool(qa["answers"])
    return qid_to_has_ans


def official_v2_normalize_answer(s):
    def remove_articles(text):
        regex = re.compile(r"\b(a|an|the)\b", re.UNICODE)
        return re.sub(regex, " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def official_v2_get_tokens(s):
    if not s:
        return []
    return official_v2_normalize_answer(s).split()


def official_v2_compute_exact(a_gold, a_pred):
    return int(official_v2_normalize_answer(a_gold) == official_v2_normalize_answer(a_pred))


def official_v2_compute_f1(a_gold, a_pred):
    gold_toks = official_v2_get_tokens(a_gold)
    pred_toks = official_v2_get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def official_v2_get_raw_scores(dataset, preds):
    exact_scores = {}
    f1_scores = {}
    for article in dataset:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                qid = str(qa["id"])
                gold_answers = [a["text"] for a in qa["answers"] if official_v2_normalize_answer(a["text"])]
                if not gold_answers:
                    gold_answers = [""]
                if qid not in preds:
                    print(f"Missing prediction for {qid}", file=sys.stderr)
                    continue
                a_pred = preds[qid]
                exact_scores[qid] = max(official_v2_compute_exact(a, a_pred) for a in gold_answers)
                f1_scores[qid] = max(official_v2_compute_f1(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores


def official_v2_apply_no_ans_threshold(scores, na_probs, qid_to_has_ans, na_prob_thresh):
    new_scores = {}
    for qid, s in scores.items():
        pred_na = na_probs[qid] > na_prob_thresh
        if pred_na:
            new_scores[qid] = float(not qid_to_has_ans[qid])
        else:
            new_scores[qid] = s
    return new_scores


def official_v2_make_eval_dict(exact_scores, f1_scores, qid_list=None):
    if not qid_list:
        total = len(exact_scores)
        return collections.OrderedDict(
            [
                ("exact", 100.0 * sum(exact_scores.values()) / total),
                ("f1", 100.0 * sum(f1_scores.values()) / total),
                ("total", total),
            ]
        )
    total = len(qid_list)
    return collections.OrderedDict(
        [
            ("exact", 100.0 * sum(exact_scores[k] for k in qid_list) / total),
            ("f1", 100.0 * sum(f1_scores[k] for k in qid_list) / total),
            ("total", total),
        ]
    )


def official_v2_merge_eval(main_eval, new_eval, prefix):
    for k in new_eval:
        main_eval[f"{prefix}_{k}"] = new_eval[k]


def official_v2_find_best_thresh(preds, scores, na_probs, qid_to_has_ans):
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = num_no_ans
    best_score = cur_score
    best_thresh = 0.0
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for qid in qid_list:
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:  # noqa: SIM108 (kept as the official script writes it)
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def official_v2_find_all_best_thresh(main_eval, preds, exact_raw, f1_raw, na_probs, qid_to_has_ans):
    best_exact, exact_thresh = official_v2_find_best_thresh(preds, exact_raw, na_probs, qid_to_has_ans)
    best_f1, f1_thresh = official_v2_find_best_thresh(preds, f1_raw, na_probs, qid_to_has_ans)
    main_eval["best_exact"] = best_exact
    main_eval["best_exact_thresh"] = exact_thresh
    main_eval["best_f1"] = best_f1
    main_eval["best_f1_thresh"] = f1_thresh


def official_v2_evaluate(dataset, preds, na_probs=None, na_prob_thresh=1.0):
    given_na_probs = na_probs is not None
    if not given_na_probs:
        na_probs = {k: 0.0 for k in preds}
    qid_to_has_ans = official_v2_make_qid_to_has_ans(dataset)
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    exact_raw, f1_raw = official_v2_get_raw_scores(dataset, preds)
    exact_thresh = official_v2_apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    f1_thresh = official_v2_apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    out_eval = official_v2_make_eval_dict(exact_thresh, f1_thresh)
    if has_ans_qids:
        has_ans_eval = official_v2_make_eval_dict(exact_thresh, f1_thresh, qid_list=has_ans_qids)
        official_v2_merge_eval(out_eval, has_ans_eval, "HasAns")
    if no_ans_qids:
        no_ans_eval = official_v2_make_eval_dict(exact_thresh, f1_thresh, qid_list=no_ans_qids)
        official_v2_merge_eval(out_eval, no_ans_eval, "NoAns")
    if given_na_probs:
        official_v2_find_all_best_thresh(out_eval, preds, exact_raw, f1_raw, na_probs, qid_to_has_ans)
    return dict(out_eval)


# ---- comparison -------------------------------------------------------------------


def _load_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _is_v2(dataset_json: dict, version: str | None) -> bool:
    if version is not None:
        return version == "2.0"
    return str(dataset_json.get("version", "")).lstrip("v").startswith("2")


def project_metrics(args: argparse.Namespace, v2: bool, predictions, null_odds) -> dict:
    config = squad_io.SquadReadConfig(version_2_with_negative=v2)
    examples, report = squad_io.read_squad_file(args.data_file, config)
    if report.dropped:
        print(f"note: squad_io dropped questions {report.dropped}; the totals may differ.", file=sys.stderr)
    if v2:
        return squad_metrics.squad_v2_metrics(examples, predictions, null_odds, args.na_prob_thresh)
    return squad_metrics.squad_v1_metrics(examples, predictions)


def compare(project: dict, official: dict) -> list[str]:
    """Lines of a side-by-side table; the last says whether they agree."""
    lines = [f"{'metric':<20} {'project':>22} {'official':>22} {'|diff|':>10}"]
    agree = project.keys() == official.keys()
    for key in list(official) + [k for k in project if k not in official]:
        ours, theirs = project.get(key), official.get(key)
        if ours is None or theirs is None:
            lines.append(f"{key:<20} {ours!s:>22} {theirs!s:>22} {'missing':>10}")
            continue
        diff = abs(float(ours) - float(theirs))
        agree = agree and diff <= TOLERANCE
        lines.append(f"{key:<20} {ours!r:>22} {theirs!r:>22} {diff:>10.2e}")
    lines.append("AGREE" if agree else f"DIFFER (tolerance {TOLERANCE})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_file", help="SQuAD JSON file with the gold answers")
    parser.add_argument("pred_file", help="predictions.json: {question id: answer text}")
    parser.add_argument("--null-odds", dest="na_prob_file", help="null_odds.json (SQuAD 2.0)")
    parser.add_argument("--na-prob-thresh", type=float, default=1.0, help="no-answer threshold (SQuAD 2.0)")
    parser.add_argument("--version", choices=("1.1", "2.0"), help="default: the data file's version key")
    args = parser.parse_args(argv)

    dataset_json = _load_json(args.data_file)
    predictions = _load_json(args.pred_file)
    null_odds = _load_json(args.na_prob_file) if args.na_prob_file else None
    v2 = _is_v2(dataset_json, args.version)
    if v2:
        official = official_v2_evaluate(dataset_json["data"], predictions, null_odds, args.na_prob_thresh)
    else:
        official = official_v1_evaluate(dataset_json["data"], predictions)
    project = project_metrics(args, v2, predictions, null_odds)
    lines = compare(project, official)
    print(f"SQuAD {'2.0' if v2 else '1.1'}: {args.data_file}")
    print("\n".join(lines))
    return 0 if lines[-1] == "AGREE" else 1


if __name__ == "__main__":
    sys.exit(main())

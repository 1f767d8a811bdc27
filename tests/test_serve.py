"""`bertqa serve` (bertqa_cli/serve.py): the page in headless Chromium, the JSON API's refusals, and answers under load.

The model is Model Maker's on the tiny_random spec, trained as tests/test_cli.py trains it (on
tiny_train.json with code-word questions, conftest's learnable_data_dir) so that it answers
"What is the code word?" about contexts it never saw (tests/synthetic_spans.py's UNSEEN). Its float
.tflite is pushed as two versions of a runs directory, beside an older third whose model.tflite is
cut in half. The
server runs in this process, on its own event loop in a thread, on an ephemeral port of the
loopback interface, for the whole module.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import pytest
from synthetic_spans import QUESTION, UNSEEN

from bertqa_cli.serve import MAX_CONTEXT_CHARS, MAX_QUESTION_CHARS, BackgroundServer, ServeConfig

# 115 windows in batches of 16: 120 steps, as tests/test_cli.py, three times what the code-word questions
# need (tests/synthetic_spans.py). Fewer would save little: tracing and the export take most of the fixture.
EPOCHS = 15
OLDER, NEWER, BROKEN = "1790000000", "1790000100", "1000"
REPO = pathlib.Path(__file__).resolve().parent.parent


def _push(serving_dir: pathlib.Path, version: str, tflite: pathlib.Path, vocab: pathlib.Path, variant: str) -> None:
    """A version directory as the Pusher leaves it (pushed_models.REQUIRED_FILES, and variants.json)."""
    folder = serving_dir / version
    folder.mkdir(parents=True)
    shutil.copyfile(tflite, folder / "model.tflite")
    shutil.copyfile(vocab, folder / "vocab.txt")
    (folder / "variants.json").write_text(json.dumps({"pushed_variant": variant}))
    (folder / "model_record.json").write_text(json.dumps(
        {"saved_model_dir": "", "metrics": {"exact_match": 90.0, "f1": 95.0}, "span": 1, "pushed_variant": variant,
         "identity": {"name": "tiny_random", "do_lower_case": True}}))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, learnable_data_dir) -> pathlib.Path:
    from bertqa.model_maker import question_answer
    from bertqa.model_maker.config import ExportFormat
    from bertqa.model_maker.question_answer import DataLoader

    directory = tmp_path_factory.mktemp("serve_model")
    previous, tempfile.tempdir = tempfile.tempdir, str(directory)  # Model Maker's working files stay here
    try:
        train = DataLoader.from_squad(str(learnable_data_dir / "tiny_train.json"), "tiny_random", is_training=True)
        model = question_answer.create(train, model_spec="tiny_random", epochs=EPOCHS)
        # One float file (one export is half of this fixture's time), pushed as both versions.
        model.export(str(directory), quantization_config=None, export_format=[ExportFormat.TFLITE, ExportFormat.VOCAB])
    finally:
        tempfile.tempdir = previous
    runs = tmp_path_factory.mktemp("runs")
    serving = runs / "bertqa" / "serving"
    vocab = directory / "vocab.txt"
    for version in (BROKEN, OLDER, NEWER):
        _push(serving, version, directory / "model.tflite", vocab, "float32")
    data = (serving / BROKEN / "model.tflite").read_bytes()
    (serving / BROKEN / "model.tflite").write_bytes(data[:len(data) // 2])
    squad = {"version": "1.1", "data": [{"title": "Code_words", "paragraphs": [
        {"context": context, "qas": [{"id": f"q{i}", "question": QUESTION, "answers": []}]}
        for i, (context, _) in enumerate(UNSEEN)]}]}
    (runs / "eval.json").write_text(json.dumps(squad))
    return runs


@pytest.fixture(scope="module")
def server(runs_dir) -> str:
    config = ServeConfig(runs_dir=str(runs_dir), port=0, data=str(runs_dir / "eval.json"), access_log=False)
    with BackgroundServer(config) as url:
        assert url.startswith("http://127.0.0.1:")
        yield url


def _request(url: str, body: bytes | None = None, content_type: str = "application/json",
             method: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": content_type} if body is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _ask(server: str, **fields) -> tuple[int, dict]:
    return _request(server + "api/answer", json.dumps(fields).encode())


def _good_answer(server: str) -> dict:
    status, body = _ask(server, context=UNSEEN[0][0], question=QUESTION)
    assert status == 200, body
    assert body["answers"][0]["text"] == UNSEEN[0][1]
    return body


def test_answers_are_litert_answerers_with_their_places_in_the_context(server, runs_dir):
    from bertqa.on_device.litert_answerer import LiteRtAnswerer

    for version in (OLDER, NEWER):
        answerer = LiteRtAnswerer(str(runs_dir / "bertqa" / "serving" / version / "model.tflite"))
        for context, word in UNSEEN:
            status, body = _ask(server, context=context, question=QUESTION, version=version, top_k=3)
            assert status == 200, body
            assert body["version"] == version and body["milliseconds"] > 0
            answers = body["answers"]
            assert answers[0]["text"] == word
            assert all(context[a["start"]:a["end"]] == a["text"] for a in answers), answers
            expected = answerer.answer(context, QUESTION, top_k=3)
            assert [a["text"] for a in answers] == [text for text, _ in expected]
            assert [a["score"] for a in answers] == pytest.approx([score for _, score in expected], abs=1e-3)


def test_offsets_point_at_the_occurrence_the_model_chose(server):
    # "falcon" also stands earlier in the text; the answer is the one after "code word is".
    context = "A falcon flew over the town. " + UNSEEN[0][0]
    status, body = _ask(server, context=context, question=QUESTION)
    assert status == 200, body
    best = body["answers"][0]
    assert best["text"] == "falcon" and best["start"] == context.index("is falcon") + 3


def test_versions_come_newest_first_each_with_the_one_pushed_before_it(server):
    status, body = _request(server + "api/versions")
    assert status == 200
    assert [v["version"] for v in body["versions"]] == [NEWER, OLDER, BROKEN]
    assert [v["previous"] for v in body["versions"]] == [OLDER, BROKEN, None]
    assert (body["newest"], body["previous"]) == (NEWER, OLDER)
    assert body["versions"][0]["variant"] == "float32" and body["versions"][0]["f1"] == 95.0
    status, body = _ask(server, context=UNSEEN[1][0], question=QUESTION)  # no version: the newest
    assert status == 200 and body["version"] == NEWER and body["answers"][0]["text"] == UNSEEN[1][1]


GOOD = {"context": UNSEEN[0][0], "question": QUESTION}


@pytest.mark.parametrize("body, content_type, status, message", [
    (b'{"context": "a", ', "application/json", 400, "the body is not valid JSON"),
    (b"\xff\xfe", "application/json", 400, "the body is not valid JSON"),
    (b'["context", "question"]', "application/json", 400, "must be a JSON object"),
    (json.dumps({"context": GOOD["context"]}).encode(), "application/json", 400, "missing field 'question'"),
    (json.dumps({"question": QUESTION}).encode(), "application/json", 400, "missing field 'context'"),
    (json.dumps({**GOOD, "question": 7}).encode(), "application/json", 400, "'question' must be a string"),
    (json.dumps({**GOOD, "question": "  "}).encode(), "application/json", 400, "'question' is empty"),
    (json.dumps({**GOOD, "qestion": QUESTION}).encode(), "application/json", 400, "unknown field 'qestion'"),
    (json.dumps({**GOOD, "top_k": 0}).encode(), "application/json", 400, "'top_k' must be an integer from 1 to 20"),
    (json.dumps({**GOOD, "context": "x" * (MAX_CONTEXT_CHARS + 1)}).encode(), "application/json", 413,
     f"'context' has {MAX_CONTEXT_CHARS + 1:,} characters; the limit is {MAX_CONTEXT_CHARS:,}"),
    (json.dumps({**GOOD, "question": "x" * (MAX_QUESTION_CHARS + 1)}).encode(), "application/json", 413,
     f"the limit is {MAX_QUESTION_CHARS:,}"),
    (b" " * 400_000, "application/json", 413, "the request body is over"),
    (json.dumps(GOOD).encode(), "text/plain", 415, "Content-Type: application/json"),
    (json.dumps({**GOOD, "version": "1234567890"}).encode(), "application/json", 404, "no pushed version 1234567890"),
    (json.dumps({**GOOD, "version": "../../etc"}).encode(), "application/json", 404, "no pushed version '../../etc'"),
    (json.dumps({**GOOD, "version": BROKEN}).encode(), "application/json", 500,
     f"version {BROKEN}: its model cannot be run"),
], ids=["truncated-json", "not-utf8", "a-list", "no-question", "no-context", "question-not-text", "empty-question",
        "unknown-field", "top-k-0", "long-context", "long-question", "huge-body", "not-json-type", "no-such-version",
        "path-as-version", "truncated-model"])
def test_bad_requests_get_a_one_line_error_and_the_server_goes_on(server, body, content_type, status, message):
    for _ in range(2):  # the second time too (a broken model is remembered, not loaded again)
        got, answer = _request(server + "api/answer", body, content_type)
        assert (got, list(answer)) == (status, ["error"]), answer
        assert message in answer["error"] and "\n" not in answer["error"], answer["error"]
    _good_answer(server)


def test_unknown_paths_and_methods_get_json_errors(server):
    assert _request(server + "api/nothing") == (404, {"error": "nothing at /api/nothing (the API: GET /api/versions, "
                                                               "POST /api/answer)"})
    status, body = _request(server + "api/answer", method="GET")
    assert status == 405 and "GET /api/answer" in body["error"]
    _good_answer(server)


def test_200_concurrent_requests_from_8_clients_get_the_answers_single_requests_get(server):
    cases = [(context, version) for context, _ in UNSEEN for version in (OLDER, NEWER)]
    single = {case: _ask(server, context=case[0], question=QUESTION, version=case[1], top_k=2)[1]["answers"]
              for case in cases}

    def one(i: int):
        context, version = cases[i % len(cases)]
        status, body = _ask(server, context=context, question=QUESTION, version=version, top_k=2)
        return (context, version), status, body

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as clients:
        results = list(clients.map(one, range(200)))
    assert [status for _, status, _ in results] == [200] * 200
    wrong = [(case, body) for case, _, body in results if body["answers"] != single[case] or body["version"] != case[1]]
    assert not wrong, wrong[:3]


def test_the_page_highlights_the_answer_of_two_versions_side_by_side(server, tmp_path):
    from browser import CHROMIUM_ARGS, chromium_path
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(server)
            page.wait_for_selector("body[data-ready=true]")
            # The newest version and the one pushed before it, and the first paragraph of --data.
            assert page.input_value("#version-a") == NEWER and page.input_value("#version-b") == OLDER
            assert page.input_value("#context") == UNSEEN[0][0]
            page.fill("#question", QUESTION)
            page.click("#ask")
            # Locators, not wait_for_function: the page's Content-Security-Policy forbids the eval it uses.
            for slot in ("a", "b"):
                page.wait_for_selector(f".result[data-slot={slot}][data-done]")
            panels = page.locator(".result")
            assert [panels.nth(i).get_attribute("data-version") for i in range(2)] == [NEWER, OLDER]
            for i in range(2):
                assert panels.nth(i).get_attribute("data-done") == "true"
                assert panels.nth(i).locator("mark").inner_text() == UNSEEN[0][1]
                assert panels.nth(i).locator(".answer").inner_text() == UNSEEN[0][1]
                figures = panels.nth(i).locator(".figures").first.inner_text()
                assert "score" in figures and " ms" in figures and f"version {(NEWER, OLDER)[i]}" in figures
            # BERTQA_SERVE_SCREENSHOT=docs/serve.png keeps this view (scripts/serve_screenshot.py: of any runs).
            page.screenshot(path=os.environ.get("BERTQA_SERVE_SCREENSHOT", str(tmp_path / "serve.png")), full_page=True)
            # Your own text: the second paragraph typed in, asked of one version.
            page.fill("#context", UNSEEN[1][0])
            page.select_option("#version-b", "")
            page.click("#ask")
            page.wait_for_selector(".result[data-done=true] mark")
            assert page.locator(".result").count() == 1
            assert page.locator(".result mark").inner_text() == UNSEEN[1][1]
        finally:
            browser.close()


def test_the_command_serves_until_it_is_stopped(runs_dir, tmp_path):
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "bertqa_cli", "serve", "--runs-dir", str(runs_dir), "--port",
                                    "0", "--data", str(runs_dir / "eval.json")], cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=stderr, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("bertqa serve: http://127.0.0.1:"), (line, log.read_text()[-2000:])
        url = line.split()[2]
        status, body = _request(url + "api/versions")
        assert status == 200 and body["newest"] == NEWER
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

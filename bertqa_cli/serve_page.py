"""The page `bertqa serve` serves at /: plain HTML, CSS and JavaScript, no build step.

Kept as strings in a module (not package data files) so that any install of the package
serves them. The script builds every piece of text with textContent, never innerHTML: contexts,
questions and answers are shown as text whatever they contain. Answer offsets are code points
(Python str indices), so the script slices Array.from(context), not the UTF-16 string.
"""

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bertqa serve</title>
<link rel="stylesheet" href="/page.css">
<script src="/page.js" defer></script>
</head>
<body>
<header>
  <h1>bertqa serve</h1>
  <p id="serving-dir" class="muted">loading the pushed versions&hellip;</p>
</header>
<main>
  <section id="ask-form">
    <label for="paragraph">Context</label>
    <select id="paragraph"><option value="">Your own text</option></select>
    <textarea id="context" rows="7" placeholder="Paste a paragraph, or choose one above."></textarea>
    <p id="context-size" class="muted"></p>
    <div id="sample-questions"></div>
    <label for="question">Question</label>
    <input id="question" type="text" autocomplete="off" placeholder="Ask about the context">
    <div class="row">
      <label>Version <select id="version-a"></select></label>
      <label>beside it <select id="version-b"></select></label>
      <button id="ask" type="button">Ask</button>
      <span id="status" role="status"></span>
    </div>
  </section>
  <section id="results"></section>
</main>
</body>
</html>
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #1b1b1b; background: #fafafa; }
header { padding: 0.8rem 1.5rem; background: #243447; color: #fff; }
header h1 { margin: 0; font-size: 1.3rem; }
header .muted { color: #c8d3df; }
main { padding: 1rem 1.5rem; max-width: 1400px; }
label { display: block; font-weight: 600; margin: 0.6rem 0 0.25rem; }
.row label { display: inline-block; margin-right: 1rem; }
select, input, textarea, button { font: inherit; }
#paragraph { max-width: 100%; }
textarea, input[type=text] { width: 100%; box-sizing: border-box; padding: 0.4rem; }
button { padding: 0.35rem 1.4rem; background: #2d6cdf; color: #fff; border: 0; border-radius: 4px; cursor: pointer; }
button:disabled { background: #8aa6d8; }
.muted { color: #666; font-size: 0.85rem; margin: 0.2rem 0; }
#sample-questions button { background: #e8eef9; color: #1d3f7a; margin: 0.2rem 0.3rem 0.2rem 0;
  padding: 0.2rem 0.6rem; }
#status { margin-left: 1rem; color: #a33; }
#results { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 1rem; margin-top: 1rem; }
.result { background: #fff; border: 1px solid #d8dde6; border-radius: 6px; padding: 0.8rem 1rem; }
.result h2 { font-size: 1rem; margin: 0 0 0.4rem; }
.result .answer { font-size: 1.25rem; font-weight: 600; margin: 0.3rem 0; }
.result .figures { color: #444; font-size: 0.9rem; }
.result .error { color: #a33; }
.result .passage { white-space: pre-wrap; line-height: 1.5; max-height: 22rem; overflow: auto;
  border-top: 1px solid #eee; margin-top: 0.6rem; padding-top: 0.6rem; }
mark { background: #ffe066; padding: 0 0.1rem; border-radius: 2px; }
"""

SCRIPT = r"""
"use strict";
const $ = (id) => document.getElementById(id);
let paragraphs = [];
let versionInfo = {};

async function getJSON(url, options) {
  const response = await fetch(url, options);
  let body;
  try { body = await response.json(); } catch (e) { body = {error: response.status + " " + response.statusText}; }
  if (!response.ok) { throw new Error(body.error || response.statusText); }
  return body;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function describeVersion(v) {
  const parts = [v.version];
  if (v.pushed_at) parts.push(v.pushed_at.replace("T", " ").replace("Z", " UTC"));
  if (typeof v.f1 === "number") parts.push("F1 " + v.f1.toFixed(2));
  return parts.join(" \u00b7 ");
}

function fillVersions(listing) {
  const a = $("version-a"), b = $("version-b");
  a.replaceChildren(); b.replaceChildren();
  b.append(new Option("none", ""));
  for (const v of listing.versions) {
    versionInfo[v.version] = v;
    a.append(new Option(describeVersion(v), v.version));
    b.append(new Option(describeVersion(v), v.version));
  }
  if (listing.newest) a.value = listing.newest;
  b.value = listing.previous || "";
  $("serving-dir").textContent = listing.versions.length
    ? listing.versions.length + " pushed version(s) in " + listing.serving_dir
    : "nothing pushed in " + listing.serving_dir + " yet (make run pushes a version)";
}

function fillParagraphs(listing) {
  paragraphs = listing.paragraphs;
  const select = $("paragraph");
  paragraphs.forEach((p, i) => {
    const preview = p.context.length > 70 ? p.context.slice(0, 70) + "\u2026" : p.context;
    select.append(new Option((p.title ? p.title + " \u2014 " : "") + preview, String(i)));
  });
  if (paragraphs.length) { select.value = "0"; choseParagraph(); }
}

function choseParagraph() {
  const value = $("paragraph").value;
  const holder = $("sample-questions");
  holder.replaceChildren();
  if (value === "") return;
  const p = paragraphs[Number(value)];
  $("context").value = p.context;
  showSize();
  for (const q of p.questions.slice(0, 8)) {
    const button = element("button", "sample", q);
    button.type = "button";
    button.addEventListener("click", () => { $("question").value = q; ask(); });
    holder.append(button);
  }
}

function showSize() {
  $("context-size").textContent = Array.from($("context").value).length.toLocaleString() + " characters";
}

function highlighted(context, answer) {
  const passage = element("div", "passage");
  if (!answer) { passage.textContent = context; return passage; }
  const chars = Array.from(context);  // offsets are code points
  passage.append(document.createTextNode(chars.slice(0, answer.start).join("")));
  passage.append(element("mark", "", chars.slice(answer.start, answer.end).join("")));
  passage.append(document.createTextNode(chars.slice(answer.end).join("")));
  return passage;
}

function panel(slot, version) {
  const article = element("article", "result");
  article.dataset.slot = slot;
  article.dataset.version = version;
  const v = versionInfo[version];
  article.append(element("h2", "", "version " + (v ? describeVersion(v) : version)));
  article.append(element("p", "figures", "asking\u2026"));
  return article;
}

function fill(article, context, result) {
  article.replaceChildren(article.firstChild);
  const best = result.answers[0];
  article.append(element("p", "answer", best ? best.text : "(no answer)"));
  const figures = [];
  if (best) figures.push("score " + best.score.toFixed(2));
  figures.push(result.milliseconds.toFixed(1) + " ms");
  if (result.queued_milliseconds >= 1) figures.push("waited " + result.queued_milliseconds.toFixed(0) + " ms");
  figures.push("version " + result.version);
  article.append(element("p", "figures", figures.join(" \u00b7 ")));
  if (result.answers.length > 1) {
    article.append(element("p", "figures", "next: " + result.answers.slice(1).map(
      (a) => a.text + " (" + a.score.toFixed(2) + ")").join(", ")));
  }
  article.append(highlighted(context, best));
}

async function ask() {
  const context = $("context").value, question = $("question").value;
  $("status").textContent = "";
  if (!context.trim() || !question.trim()) { $("status").textContent = "Give a context and a question."; return; }
  const versions = [["a", $("version-a").value]];
  if ($("version-b").value) versions.push(["b", $("version-b").value]);
  const results = $("results");
  results.replaceChildren();
  $("ask").disabled = true;
  await Promise.all(versions.map(async ([slot, version]) => {
    const article = panel(slot, version);
    results.append(article);
    try {
      const body = {context: context, question: question, top_k: 3};
      if (version) body.version = version;
      const result = await getJSON("/api/answer", {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
      fill(article, context, result);
      article.dataset.done = "true";
    } catch (error) {
      article.replaceChildren(article.firstChild, element("p", "error", error.message));
      article.dataset.done = "error";
    }
  }));
  $("ask").disabled = false;
}

async function start() {
  $("paragraph").addEventListener("change", choseParagraph);
  $("context").addEventListener("input", () => { $("paragraph").value = ""; $("sample-questions").replaceChildren();
                                                 showSize(); });
  $("ask").addEventListener("click", ask);
  $("question").addEventListener("keydown", (event) => { if (event.key === "Enter") ask(); });
  try {
    fillVersions(await getJSON("/api/versions"));
    fillParagraphs(await getJSON("/api/contexts"));
    document.body.dataset.ready = "true";
  } catch (error) {
    $("status").textContent = error.message;
  }
}

start();
"""

// Headless Chromium for the tests, through playwright-core; driven by tests/interop/browser.py.
//
//   node browser.mjs CHROMIUM     CHROMIUM: the browser's executable, e.g. /usr/bin/chromium
//
// It launches the browser once and says {"event": "ready", "version": V} (or
// {"event": "ready", "error": MESSAGE}, and exits). Then it reads requests as
// JSON lines on stdin and answers each with a JSON line on stdout,
// {"id": N, "value": V} or {"id": N, "error": MESSAGE}. Requests run
// concurrently and are answered as they finish, so one page may wait for a
// message while another sends it. T is a timeout in milliseconds.
//
//   {"id": N, "op": "open", "url": URL, "timeout": T}        a new page (in a context of its
//                                                            own: no shared cookies) -> PAGE
//   {"id": N, "op": "evaluate", "page": P, "js": JS, "arg": X, "timeout": T}
//        JS is a function, called with X (awaited if async), or any other expression -> value
//   {"id": N, "op": "wait", "page": P, "js": JS, "arg": X, "timeout": T}
//        the same, again and again until the value is truthy -> that value
//   {"id": N, "op": "text", "page": P, "selector": S, "timeout": T}      the element's innerText
//   {"id": N, "op": "fill" | "click" | "press", "page": P, "selector": S, "value": V, "timeout": T}
//   {"id": N, "op": "logs", "page": P}     the page's console messages and uncaught errors
//   {"id": N, "op": "close", "page": P}
//
// Values must survive JSON: return digests or samples of binary data, not the data.
// When stdin ends it closes the browser and exits, so a test runner that dies
// leaves no browser behind (Chromium also exits when its pipe to us closes).

import process from "node:process";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

// Headless and offline: no sandbox (we may run as root), no GPU, and none of
// the background traffic that would try to reach Google.
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const [executablePath] = process.argv.slice(2);
if (!executablePath) {
  process.stderr.write("usage: node browser.mjs CHROMIUM\n");
  process.exit(2);
}

function send(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

// Playwright's Node API treats a string as an expression; like its Python
// API, we call one that looks like a function with the argument instead.
function looksLikeFunction(source) {
  if (/^(async\s+)?function\b/.test(source)) return true;
  let rest = source.replace(/^async\b\s*/, "");
  if (rest.startsWith("(")) {
    let depth = 0;
    let end = 0;
    while (end < rest.length && (depth += { "(": 1, ")": -1 }[rest[end]] ?? 0) > 0) end++;
    rest = rest.slice(end + 1);
  } else {
    rest = rest.replace(/^[\w$]+/, "");
  }
  return /^\s*=>/.test(rest);
}

function pageFunction(js) {
  const source = js.trim();
  // Evaluating a function expression runs none of its code here; Playwright
  // sends the function's source to the page.
  return looksLikeFunction(source) ? new Function(`return (${source});`)() : source;
}

function withTimeout(promise, ms, what) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

let browser;
try {
  browser = await chromium.launch({ executablePath, args: ARGS, timeout: 30000 });
} catch (err) {
  send({ event: "ready", error: err.message });
  process.exit(1);
}
const pages = new Map(); // id -> {page, logs}
let nextPage = 1;

async function open({ url, timeout }) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const logs = [];
  page.on("console", (message) => logs.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => logs.push(`pageerror: ${error.message}`));
  const id = nextPage++;
  pages.set(id, { page, logs });
  try {
    await page.goto(url, { timeout });
  } catch (err) {
    pages.delete(id);
    await context.close();
    throw err;
  }
  return id;
}

function pageOf(request) {
  const entry = pages.get(request.page);
  if (entry === undefined) throw new Error(`no page ${request.page}`);
  return entry;
}

const OPS = {
  open,
  async evaluate(request) {
    const { page } = pageOf(request);
    const evaluation = page.evaluate(pageFunction(request.js), request.arg);
    return withTimeout(evaluation, request.timeout, "evaluate");
  },
  async wait(request) {
    const { page } = pageOf(request);
    const options = { timeout: request.timeout, polling: 50 };
    const handle = await page.waitForFunction(pageFunction(request.js), request.arg, options);
    try {
      return await handle.jsonValue();
    } finally {
      await handle.dispose();
    }
  },
  async text(request) {
    return pageOf(request).page.locator(request.selector).innerText({ timeout: request.timeout });
  },
  async fill(request) {
    const locator = pageOf(request).page.locator(request.selector);
    return locator.fill(request.value, { timeout: request.timeout });
  },
  async click(request) {
    return pageOf(request).page.locator(request.selector).click({ timeout: request.timeout });
  },
  async press(request) {
    const locator = pageOf(request).page.locator(request.selector);
    return locator.press(request.value, { timeout: request.timeout });
  },
  async logs(request) {
    return pageOf(request).logs;
  },
  async close(request) {
    const { page } = pageOf(request);
    pages.delete(request.page);
    await page.context().close();
  },
};

async function handle(line) {
  let request;
  try {
    request = JSON.parse(line);
    const op = OPS[request.op];
    if (op === undefined) throw new Error(`unknown op ${JSON.stringify(request.op)}`);
    const value = await op(request);
    send({ id: request.id, value: value ?? null });
  } catch (err) {
    send({ id: request?.id ?? null, error: err?.message ?? String(err) });
  }
}

send({ event: "ready", version: browser.version() });
createInterface({ input: process.stdin })
  .on("line", (line) => line.trim() && handle(line))
  .on("close", async () => {
    // Closing the browser ends Chromium and removes its temporary profile.
    await withTimeout(browser.close(), 10000, "closing the browser").catch(() => {});
    process.exit(0);
  });

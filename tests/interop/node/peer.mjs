// A WebSocket peer built on Node's `ws`, for tests/sync/test_interop_node.py.
//
//   node peer.mjs server [--deflate] [--max-payload N]         listens on 127.0.0.1, port 0
//   node peer.mjs client [URL] [--deflate] [--max-payload N]   connects to URL, and to
//                                                              each URL read from stdin
//
// Either way, once open, the peer echoes every message, except text messages
// starting with "!", which are commands in JSON (the test drives the exchange):
//
//   !{"do": "close", "code": 4000, "reason": "bye"}      ws.close(code, reason); no code: none
//   !{"do": "ping", "data": HEX}                         ping; the Pong is reported, and
//                                                        answered with {"event": "pong", ...}
//   !{"do": "fragments", "binary": B, "parts": [HEX],    one message, one frame per part,
//     "pingAfter": I}                                    and a ping after part I, if given
//   !{"do": "send", "binary": B, "size": N, "fill": X}   N bytes of X (a byte), or random
//
// It reports what happens as JSON lines on stdout, each with an "event":
// listening {port}, open {extensions, protocol}, message {binary, size, sha256},
// sent {size, sha256}, pong {data}, error {message, code} (from ws),
// socket-error {message, code} (from TCP, such as a reset), close {code, reason}.
// A connection's reports carry "client": the port of its client end, which
// tells connections apart. A server exits when stdin ends; a client once stdin
// ended and its connections closed. So a test runner that dies leaves no peer.

import { createHash, randomBytes } from "node:crypto";
import process from "node:process";
import { createInterface } from "node:readline";
import { WebSocket, WebSocketServer } from "ws";

const [mode, ...rest] = process.argv.slice(2);
const url = mode === "client" && rest[0]?.startsWith("ws") ? rest.shift() : undefined;
const deflate = rest.includes("--deflate");
const at = rest.indexOf("--max-payload");
const maxPayload = at >= 0 ? Number(rest[at + 1]) : 100 * 1024 * 1024; // ws's default
// threshold 0: compress even the smallest message, so every test exercises inflate.
const perMessageDeflate = deflate ? { threshold: 0 } : false;

function report(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

const sha256 = (data) => createHash("sha256").update(data).digest("hex");

function run(ws, socket, tag) {
  const tell = (event, fields) => report(event, { ...tag, ...fields });
  tell("open", { extensions: ws.extensions, protocol: ws.protocol });
  // ws hides TCP errors; a reset while closing is one the tests look for.
  socket.on("error", (err) => tell("socket-error", { message: err.message, code: err.code }));
  ws.on("error", (err) => tell("error", { message: err.message, code: err.code ?? null }));
  ws.on("close", (code, reason) => tell("close", { code, reason: reason.toString() }));
  ws.on("pong", (data) => {
    tell("pong", { data: data.toString("hex") });
    ws.send(JSON.stringify({ event: "pong", data: data.toString("hex") }));
  });
  ws.on("message", (data, isBinary) => {
    if (!isBinary && data[0] === 0x21 /* "!" */) {
      try {
        command(ws, JSON.parse(data.subarray(1).toString()), tell);
      } catch (err) {
        tell("error", { message: `bad command: ${err.message}`, code: null });
      }
      return;
    }
    tell("message", { binary: isBinary, size: data.length, sha256: sha256(data) });
    ws.send(data, { binary: isBinary });
  });
}

function command(ws, cmd, tell) {
  switch (cmd.do) {
    case "close":
      ws.close(cmd.code, cmd.reason);
      break;
    case "ping":
      ws.ping(Buffer.from(cmd.data, "hex"));
      break;
    case "fragments":
      cmd.parts.forEach((part, i) => {
        const fin = i === cmd.parts.length - 1;
        ws.send(Buffer.from(part, "hex"), { binary: cmd.binary, fin });
        if (i === cmd.pingAfter) ws.ping(Buffer.from("between fragments"));
      });
      break;
    case "send": {
      const data = cmd.fill === undefined ? randomBytes(cmd.size) : Buffer.alloc(cmd.size, cmd.fill);
      tell("sent", { size: data.length, sha256: sha256(data) });
      ws.send(data, { binary: cmd.binary });
      break;
    }
    default:
      tell("error", { message: `unknown command ${JSON.stringify(cmd)}`, code: null });
  }
}

if (mode === "server") {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate, maxPayload });
  server.on("listening", () => report("listening", { port: server.address().port }));
  server.on("connection", (ws, request) => {
    run(ws, request.socket, { client: request.socket.remotePort });
  });
  process.stdin.on("end", () => process.exit(0));
} else if (mode === "client") {
  let connections = 0;
  let stdinEnded = false;
  const exitWhenDone = () => stdinEnded && connections === 0 && process.exit(0);
  const connect = (target) => {
    connections += 1;
    const ws = new WebSocket(target, { perMessageDeflate, maxPayload, handshakeTimeout: 5000 });
    let socket;
    ws.on("upgrade", (response) => (socket = response.socket));
    ws.on("open", () => run(ws, socket, { client: socket.localPort }));
    ws.on("error", (err) => {
      if (socket === undefined) report("error", { url: target, message: err.message });
    });
    ws.on("close", () => {
      connections -= 1;
      exitWhenDone();
    });
  };
  if (url) connect(url);
  createInterface({ input: process.stdin })
    .on("line", (line) => line.trim() && connect(line.trim()))
    .on("close", () => {
      stdinEnded = true;
      exitWhenDone();
    });
} else {
  process.stderr.write("usage: node peer.mjs server|client [URL] [--deflate] [--max-payload N]\n");
  process.exit(2);
}

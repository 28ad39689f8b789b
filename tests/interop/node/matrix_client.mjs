// A WebSocket client on Node's `ws` that the test drives, for tests/interop/test_matrix.py.
//
//   node matrix_client.mjs
//
// peer.mjs echoes and obeys the other side; this client does what the test
// says instead, so that a test can drive Node as it drives a Python client.
// It reads one JSON instruction a line from stdin; each names a connection
// by an "id" of the test's choosing (payloads are base64):
//
//   {"id": I, "do": "open", "url": U, "deflate": B}    open a connection
//   {"id": I, "do": "send", "binary": B, "data": B64}  one message, in one frame
//   {"id": I, "do": "fragments", "binary": B,          one message, a frame per part
//    "parts": [B64], "pingAfter": I}                   (text parts may cut characters),
//                                                      and a Ping after part I, if given
//   {"id": I, "do": "ping", "data": B64}               a Ping
//   {"id": I, "do": "close", "code": C, "reason": R}   the closing handshake
//   {"id": I, "do": "terminate"}                       drop the TCP connection
//
// and writes what happens as JSON lines on stdout, each with the "id":
// open {extensions, port} (port: the client end's), message {binary, data},
// pong {data}, close {code, reason} (the Close received, as ws reports it),
// error {message}. It exits when stdin ends, dropping what is still open, so
// a test runner that dies leaves no process behind.

import process from "node:process";
import { createInterface } from "node:readline";
import { WebSocket } from "ws";

const connections = new Map();

function report(id, event, fields = {}) {
  process.stdout.write(JSON.stringify({ id, event, ...fields }) + "\n");
}

const b64 = (data) => Buffer.from(data).toString("base64");

function open(id, url, deflate) {
  // threshold 0: compress even the smallest message, as peer.mjs does.
  const ws = new WebSocket(url, {
    perMessageDeflate: deflate ? { threshold: 0 } : false,
    maxPayload: 100 * 1024 * 1024,
    handshakeTimeout: 5000,
  });
  connections.set(id, ws);
  let socket;
  ws.on("upgrade", (response) => (socket = response.socket));
  ws.on("open", () => report(id, "open", { extensions: ws.extensions, port: socket.localPort }));
  ws.on("message", (data, isBinary) => report(id, "message", { binary: isBinary, data: b64(data) }));
  ws.on("pong", (data) => report(id, "pong", { data: b64(data) }));
  ws.on("error", (err) => report(id, "error", { message: err.message }));
  ws.on("close", (code, reason) => {
    connections.delete(id);
    report(id, "close", { code, reason: reason.toString() });
  });
}

function run(cmd) {
  if (cmd.do === "open") return open(cmd.id, cmd.url, cmd.deflate);
  const ws = connections.get(cmd.id);
  if (ws === undefined) return report(cmd.id, "error", { message: `no connection ${cmd.id}` });
  switch (cmd.do) {
    case "send":
      ws.send(Buffer.from(cmd.data, "base64"), { binary: cmd.binary });
      break;
    case "fragments":
      cmd.parts.forEach((part, i) => {
        const fin = i === cmd.parts.length - 1;
        ws.send(Buffer.from(part, "base64"), { binary: cmd.binary, fin });
        if (i === cmd.pingAfter) ws.ping(Buffer.from("between fragments")); // as peer.mjs
      });
      break;
    case "ping":
      ws.ping(Buffer.from(cmd.data, "base64"));
      break;
    case "close":
      ws.close(cmd.code, cmd.reason);
      break;
    case "terminate":
      ws.terminate();
      break;
    default:
      report(cmd.id, "error", { message: `unknown instruction ${JSON.stringify(cmd)}` });
  }
}

createInterface({ input: process.stdin, crlfDelay: Infinity })
  .on("line", (line) => {
    if (!line.trim()) return;
    try {
      run(JSON.parse(line));
    } catch (err) {
      report(null, "error", { message: `bad instruction: ${err.message}` });
    }
  })
  .on("close", () => {
    for (const ws of connections.values()) ws.terminate();
    process.exit(0);
  });

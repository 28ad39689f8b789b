// The Node `ws` peer of `wsproto bench` (wsproto_cli/bench_impls.py): an echo
// server, or a client that runs the benchmark's loops itself.
//
//   node bench_node.mjs server MODULES [--deflate] [--max-payload N]
//   node bench_node.mjs client MODULES URL [--deflate] [--max-payload N]
//
// MODULES is a node_modules directory that holds `ws` (npm install ws); this
// file ships inside a Python package, so `ws` is looked up there, not beside it.
//
// The server prints "READY <port>" once listening on 127.0.0.1, and exits
// when its stdin ends, as the benchmark's Python servers do. It echoes every
// message, text as text and binary as binary.
//
// The client prints {"event": "open", "extensions": ...} once open, then
// runs one command a line from stdin, in JSON, answering each with one line:
//
//   {"op": "exchange", "binary": B, "data": D}       -> {"binary": B, "data": D} (the echo)
//   {"op": "round_trips", "binary": B, "data": D,    -> {"count": N, "elapsed": SECONDS}
//    "duration": SECONDS}                               send, wait for the echo, again
//   {"op": "pipelined", "binary": B, "data": D,      -> {"elapsed": SECONDS}
//    "count": N}                                        send N, then wait for N echoes
//   {"op": "close"}                                  -> {"closed": CODE}, then it exits
//
// D is text, or base64 when B (binary) is true. Any failure is answered (or
// reported) as {"error": MESSAGE}.

import { createRequire } from "node:module";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { createInterface } from "node:readline";

const [mode, modules, ...rest] = process.argv.slice(2);
const require = createRequire(join(modules, "bench-node.cjs"));
const WebSocket = require("ws");

const deflate = rest.includes("--deflate");
const at = rest.indexOf("--max-payload");
const maxPayload = at >= 0 ? Number(rest[at + 1]) : 100 * 1024 * 1024;
const HIGH_WATER = 1 << 20; // bytes queued before a pipelined sender lets the socket drain

function answer(fields) {
  process.stdout.write(JSON.stringify(fields) + "\n");
}

if (mode === "server") {
  // perMessageDeflate: true is ws's own default settings (threshold 1 KiB).
  const server = new WebSocket.WebSocketServer({
    host: "127.0.0.1",
    port: 0,
    perMessageDeflate: deflate,
    maxPayload,
  });
  server.on("listening", () => process.stdout.write(`READY ${server.address().port}\n`));
  server.on("connection", (ws) => {
    ws.on("error", () => {}); // a client that goes away is not our failure
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
} else if (mode === "client") {
  client(rest[0]);
} else {
  process.stderr.write("usage: bench_node.mjs server|client MODULES [URL] [options]\n");
  process.exit(2);
}

function client(url) {
  const ws = new WebSocket(url, { perMessageDeflate: deflate, maxPayload });
  let onMessage = () => {};
  let closing = false;
  ws.on("message", (data, isBinary) => onMessage(data, isBinary));
  ws.on("error", (err) => answer({ error: err.message }));
  ws.on("close", (code) => {
    if (closing) answer({ closed: code });
    process.exit(0);
  });
  ws.on("open", () => {
    answer({ event: "open", extensions: ws.extensions });
    const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
    lines.on("line", (line) => {
      try {
        run(JSON.parse(line));
      } catch (err) {
        answer({ error: `bad command: ${err.message}` });
      }
    });
    lines.on("close", () => ws.terminate());
  });

  function run(cmd) {
    const binary = Boolean(cmd.binary);
    const message = binary ? Buffer.from(cmd.data ?? "", "base64") : cmd.data;
    const options = { binary };
    switch (cmd.op) {
      case "exchange":
        onMessage = (data, isBinary) => {
          onMessage = () => {};
          answer({
            binary: isBinary,
            data: isBinary ? data.toString("base64") : data.toString(),
          });
        };
        ws.send(message, options);
        break;
      case "round_trips": {
        let count = 0;
        const start = performance.now();
        const end = start + cmd.duration * 1000;
        onMessage = () => {
          count += 1;
          const now = performance.now();
          if (now < end) {
            ws.send(message, options);
          } else {
            onMessage = () => {};
            answer({ count, elapsed: (now - start) / 1000 });
          }
        };
        ws.send(message, options);
        break;
      }
      case "pipelined": {
        let sent = 0;
        let received = 0;
        const start = performance.now();
        onMessage = () => {
          received += 1;
          if (received === cmd.count) {
            onMessage = () => {};
            answer({ elapsed: (performance.now() - start) / 1000 });
          }
        };
        // ws buffers without limit: let the socket drain now and then, as a
        // Node program sending this much would.
        const pump = () => {
          while (sent < cmd.count) {
            ws.send(message, options);
            sent += 1;
            if (ws.bufferedAmount > HIGH_WATER) {
              setImmediate(pump);
              return;
            }
          }
        };
        pump();
        break;
      }
      case "close":
        closing = true;
        ws.close(1000);
        break;
      default:
        answer({ error: `unknown op: ${cmd.op}` });
    }
  }
}

// verify-js: a test phase that checks a signed attachment and that a device port answers,
// written in JavaScript and built into a component by componentize-js (see README.md).
//
// The job attaches a file (say a firmware image) and signs it: `signature` in the phase's data
// is HMAC-SHA256(key, file) in hex, and the key is the secret SIGNING_KEY, which the phase must
// declare. The phase reads the file from a directory the job granted, checks the signature,
// optionally connects to `connect` ("a.b.c.d:port", a service on the device under test), and
// reports up to three test cases (suite `verify`) and one measurement (`attachment.size`).
//
// The data field `work` instead runs the CPU-bound benchmark workload and nothing else.

import { log } from 'phasebox:plugin/log@0.1.0';
import { get as getSecret } from 'phasebox:plugin/secrets@0.1.0';
import { reportCase, reportMeasurement } from 'phasebox:plugin/results@0.1.0';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';
import { instanceNetwork } from 'wasi:sockets/instance-network@0.2.12';
import { createTcpSocket } from 'wasi:sockets/tcp-create-socket@0.2.12';
// Not called by name, but imported so that componentize-js generates the glue for these resource
// types: it binds only the interfaces the source imports, and the functions above hand out and
// take a `network`, a `tcp-socket` and a `pollable`. Without them the first socket call fails
// with "import_network_0_2_12$Network is not defined".
// eslint-disable-next-line no-unused-vars
import { TcpSocket } from 'wasi:sockets/tcp@0.2.12';
// eslint-disable-next-line no-unused-vars
import { Pollable } from 'wasi:io/poll@0.2.12';

import { hmacSha256, toHex } from './sha256.js';
import { work } from './work.js';

const NAME = 'verify-js';
// The one secret this plugin declares in its manifest.
const KEY_SECRET = 'SIGNING_KEY';

// A failed phase: the exported `run` returns result<outcome, failure>, and componentize-js
// turns a thrown value into the `err` case, so the value thrown must be a `failure` variant.
class Failure {
  constructor(kind, message) {
    this.tag = kind; // 'infra-error', 'job-error' or 'test-failure'
    this.val = message;
  }
}

export function run(ctx) {
  let data;
  try {
    data = JSON.parse(ctx.data);
  } catch (e) {
    throw new Failure('job-error', `${NAME}: the data is not JSON: ${e.message}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new Failure('job-error', `${NAME}: the data must be a JSON object`);
  }

  if (data.work !== undefined) {
    if (!Number.isSafeInteger(data.work) || data.work < 0) {
      throw new Failure('job-error', `${NAME}: \`work\` must be a non-negative integer`);
    }
    return { summary: `work(${data.work}) = ${work(data.work)}` };
  }

  const path = data.attachment;
  if (typeof path !== 'string') {
    throw new Failure(
      'job-error',
      `${NAME} needs \`attachment\` in its data: the path of a file in a directory the job grants, ` +
        'e.g. /attachments/firmware.bin',
    );
  }
  for (const field of ['signature', 'connect']) {
    if (data[field] !== undefined && typeof data[field] !== 'string') {
      throw new Failure('job-error', `${NAME}: \`${field}\` must be a string`);
    }
  }
  const dut = ctx.dut.find((fact) => fact.key === 'name')?.value ?? 'an unnamed device';
  say(`${NAME}: checking ${path} on ${dut}`);

  // 1. The attachment: anything outside the granted directories does not exist here.
  let started = Date.now();
  let contents;
  try {
    contents = readFile(path);
  } catch (e) {
    const message = `cannot read ${path}: ${describe(e)}`;
    report('read-attachment', 'error', started, message);
    throw new Failure('job-error', message);
  }
  report('read-attachment', 'pass', started, `${contents.length} bytes`);
  reportMeasurement({ name: 'attachment.size', value: contents.length, unit: 'bytes' });

  // 2. The signature, checked with the secret key.
  started = Date.now();
  let signed = 'not signed';
  if (data.signature === undefined) {
    report('signature', 'skip', started, "no `signature` in the job's data");
  } else {
    let key;
    try {
      key = getSecret(KEY_SECRET);
    } catch {
      // The host gives this one answer whether the secret exists or not.
      const message = `secret ${KEY_SECRET}: not granted to this phase`;
      report('signature', 'error', started, message);
      throw new Failure('job-error', message);
    }
    // Never print a secret; the host would redact it from the output anyway.
    const digest = toHex(hmacSha256(new TextEncoder().encode(key), contents));
    if (!sameHex(digest, data.signature)) {
      const message = `${path} does not match its signature (key ${KEY_SECRET})`;
      report('signature', 'fail', started, message);
      throw new Failure('test-failure', message);
    }
    report('signature', 'pass', started, `HMAC-SHA256 with ${KEY_SECRET}`);
    signed = 'signature verified';
  }

  // 3. The device's port, when the job names one.
  let reached = '';
  if (data.connect !== undefined) {
    started = Date.now();
    try {
      connect(data.connect);
    } catch (e) {
      const message = `cannot connect to ${data.connect}: ${describe(e)}`;
      report('reachable', 'fail', started, message);
      throw new Failure('test-failure', message);
    }
    report('reachable', 'pass', started, `connected to ${data.connect}`);
    reached = `, ${data.connect} reachable`;
  }

  const summary = `${path}: ${contents.length} bytes, ${signed}${reached}`;
  say(summary);
  return { summary };
}

// Writes a line to the phase's output and the same line to its log.
function say(line) {
  console.log(line);
  log('info', line);
}

function report(name, status, started, message) {
  // u64 fields are BigInts on the JavaScript side.
  reportCase({ suite: 'verify', name, status, durationMs: BigInt(Date.now() - started), message });
}

// Compares two hex strings, ignoring case, without stopping at the first difference (so the
// time taken does not tell how much of a forged signature was right).
function sameHex(a, b) {
  a = a.toLowerCase();
  b = b.toLowerCase();
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

// ---- files, through wasi:filesystem -------------------------------------------------------

// Reads a whole file by absolute path, resolving it the way wasi-libc does for C and Python:
// against the preopened directory with the longest matching prefix. A path under no preopen
// does not exist; `..` that would leave a preopen is refused by the host.
function readFile(path) {
  const absolute = path.startsWith('/') ? path : `/${path}`;
  let best;
  for (const [dir, mount] of getDirectories()) {
    const prefix = mount.replace(/\/+$/, '');
    if ((absolute === prefix || absolute.startsWith(`${prefix}/`)) && (!best || prefix.length > best.prefix.length)) {
      best = { dir, prefix };
    }
  }
  if (!best) throw 'no-entry';
  const relative = absolute.slice(best.prefix.length).replace(/^\/+/, '') || '.';
  const file = best.dir.openAt({ symlinkFollow: true }, relative, {}, { read: true });
  const chunks = [];
  let length = 0;
  for (;;) {
    const [chunk, end] = file.read(65536n, BigInt(length));
    chunks.push(chunk);
    length += chunk.length;
    if (end || chunk.length === 0) break;
  }
  const all = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return all;
}

// ---- sockets, through wasi:sockets --------------------------------------------------------

// Opens a TCP connection to "a.b.c.d:port" and closes it again. IPv4 literals only: names
// would need wasi:sockets/ip-name-lookup and a `dns` grant, which this plugin does not ask for.
function connect(endpoint) {
  // componentize-js 0.23 emits no class for a resource that has no methods, such as
  // wasi:sockets/network's `network`, yet its glue for instance-network() builds the handle
  // object from that class, by a global name, in the glue's own global object (the bindings
  // run in a realm apart from the plugin's). The glue's functions belong to that realm, so its
  // Function constructor reaches that global; an empty class there is all the glue needs (the
  // handle itself travels in a symbol-keyed property).
  const glueGlobal = instanceNetwork.constructor('return this')();
  glueGlobal['import_network_0_2_12$Network'] ??= class Network {};

  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3}):(\d{1,5})$/.exec(endpoint);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const port = m ? Number(m[5]) : -1;
  if (!m || octets.some((o) => o > 255) || port > 65535) {
    throw new Failure('job-error', `${NAME}: \`connect\` must be an IPv4 address and port, e.g. 192.0.2.7:22`);
  }
  const socket = createTcpSocket('ipv4');
  socket.startConnect(instanceNetwork(), { tag: 'ipv4', val: { port, address: octets } });
  const ready = socket.subscribe();
  for (;;) {
    try {
      const [input, output] = socket.finishConnect();
      // Resources are released when their handles are disposed; the phase's instance goes
      // away right after `run` anyway, but a plugin that loops would run out of handles.
      input[Symbol.dispose]?.();
      output[Symbol.dispose]?.();
      break;
    } catch (e) {
      if (errorCode(e) !== 'would-block') throw e;
      ready.block();
    }
  }
  ready[Symbol.dispose]?.();
  socket[Symbol.dispose]?.();
}

// ---- errors -------------------------------------------------------------------------------

// The WASI error code carried by an exception from a WASI import (an `error-code` enum case
// such as 'no-entry'), whichever way the bindings wrap it.
function errorCode(e) {
  if (typeof e === 'string') return e;
  if (e && typeof e.payload === 'string') return e.payload;
  return undefined;
}

// The same words wasi-libc's strerror uses for these codes, so a JavaScript plugin reports a
// denial as the C, Python and Rust plugins do.
const STRERROR = {
  'no-entry': 'No such file or directory',
  'not-permitted': 'Operation not permitted',
  access: 'Permission denied',
  'access-denied': 'Permission denied',
  'is-directory': 'Is a directory',
  'not-directory': 'Not a directory',
  loop: 'Symbolic link loop',
  'connection-refused': 'Connection refused',
  'connection-reset': 'Connection reset by peer',
  timeout: 'Connection timed out',
  'remote-unreachable': 'Host is unreachable',
  'invalid-argument': 'Invalid argument',
};

function describe(e) {
  const code = errorCode(e);
  if (code !== undefined) return STRERROR[code] ?? code;
  return e instanceof Error ? e.message : String(e);
}

// The chemistry example's professor: a mas agent in plain Node.js (20+), no npm packages.
//
// It speaks HTTP to its sidecar ($MAS_SIDECAR_URL) with the built-in fetch, like an agent in any
// language would, presenting its token on every request (Authorization: Bearer, from
// $MAS_SIDECAR_TOKEN or the file $MAS_SIDECAR_TOKEN_FILE names: the sidecar serves no one else).
// It publishes its metadata (PUT /v1/self), takes deliveries from the
// server-sent-events stream (GET /v1/deliveries) and settles each one: a `homework.question`
// gets a `homework.answer` reply (POST /v1/deliveries/{id}/reply) and an ack; a `homework.thanks`
// note is acked; anything else is rejected (dead-lettered with the reason); a failure nacks it
// (redelivered later).
//
// Answers come from a small rule book (molar masses, moles from grams, the pH of strong acids
// and bases), the same answer for the same question every time. When OPENAI_API_KEY is set an
// OpenAI chat model answers instead (OPENAI_MODEL, default gpt-4o-mini; OPENAI_BASE_URL), and the
// rule book again when the model cannot be reached.
//
// The file lives in k8s/ because kustomize packs only files at or below the kustomization's
// folder into the ConfigMap that carries it into the cluster; `mas up` runs it from there too.
"use strict";

const fs = require("node:fs");

const SIDECAR = (process.env.MAS_SIDECAR_URL || "http://127.0.0.1:8790").replace(/\/$/, "");
const TOKEN = process.env.MAS_SIDECAR_TOKEN_FILE
  ? fs.readFileSync(process.env.MAS_SIDECAR_TOKEN_FILE, "utf8").trim()
  : process.env.MAS_SIDECAR_TOKEN || "";
const AUTHORIZATION = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
const OPENAI_URL = (process.env.OPENAI_BASE_URL || "https://api.openai.com/v1").replace(
  /\/$/,
  "",
);
const OPENAI_MODEL = process.env.OPENAI_MODEL || "gpt-4o-mini";
const SYSTEM_PROMPT =
  "You are a patient chemistry professor helping a student with homework. Answer in at most " +
  "three sentences, show the key calculation, and end with the result and its unit.";

// --- the rule book --------------------------------------------------------------------------

const ATOMIC_MASS = {
  H: 1.008, He: 4.0026, Li: 6.94, C: 12.011, N: 14.007, O: 15.999, F: 18.998, Na: 22.99,
  Mg: 24.305, Al: 26.982, Si: 28.085, P: 30.974, S: 32.06, Cl: 35.45, K: 39.098, Ca: 40.078,
  Fe: 55.845, Cu: 63.546, Zn: 65.38, Br: 79.904, Ag: 107.87, I: 126.9,
};
const STRONG_ACIDS = new Set(["HCl", "HBr", "HI", "HNO3", "HClO4"]);
const STRONG_BASES = new Set(["NaOH", "KOH", "LiOH"]);
const FALLBACK =
  "Write down what is given, what is asked and the relation between them, then solve for the " +
  "unknown. I can check molar masses, moles from grams and the pH of strong acids and bases.";

/** Element counts of a formula such as C6H12O6 or Ca(OH)2; null when it is not one. */
function parseFormula(formula) {
  let position = 0;
  function group() {
    const counts = {};
    while (position < formula.length && formula[position] !== ")") {
      let part;
      if (formula[position] === "(") {
        position += 1;
        part = group();
        if (formula[position] !== ")") return null;
        position += 1;
      } else {
        const element = /^[A-Z][a-z]?/.exec(formula.slice(position));
        if (!element || !(element[0] in ATOMIC_MASS)) return null;
        position += element[0].length;
        part = { [element[0]]: 1 };
      }
      if (part === null) return null;
      const digits = /^\d*/.exec(formula.slice(position))[0];
      position += digits.length;
      const times = digits ? Number(digits) : 1;
      for (const [element, count] of Object.entries(part)) {
        counts[element] = (counts[element] || 0) + count * times;
      }
    }
    return counts;
  }
  const counts = group();
  return counts && position === formula.length && Object.keys(counts).length ? counts : null;
}

/** Molar mass in g/mol and how it was summed, or null. */
function molarMass(formula) {
  const counts = parseFormula(formula);
  if (!counts) return null;
  let total = 0;
  const terms = [];
  for (const [element, count] of Object.entries(counts)) {
    total += count * ATOMIC_MASS[element];
    terms.push(`${count} x ${element} ${ATOMIC_MASS[element]}`);
  }
  return { total, terms: terms.join(" + ") };
}

/** The rule book's answer to a question: deterministic, offline. */
function ruleAnswer(question) {
  const grams = /how many moles[^0-9]*?([\d.]+)\s*(?:g|grams?)\s+of\s+([A-Za-z0-9()]+)/i;
  let match = grams.exec(question);
  if (match) {
    const mass = molarMass(match[2]);
    if (mass) {
      const moles = Number(match[1]) / mass.total;
      return (
        `n = m / M = ${match[1]} g / ${mass.total.toFixed(2)} g/mol = ` +
        `${moles.toFixed(3)} mol of ${match[2]}.`
      );
    }
  }
  match = /molar mass of\s+([A-Za-z0-9()]+)/i.exec(question);
  if (match) {
    const mass = molarMass(match[1]);
    if (mass) return `M(${match[1]}) = ${mass.terms} = ${mass.total.toFixed(2)} g/mol.`;
  }
  match = /pH of (?:an? )?([\d.]+(?:e-?\d+)?)\s*M\s+([A-Za-z0-9]+)/i.exec(question);
  if (match) {
    const concentration = Number(match[1]);
    if (concentration > 0 && STRONG_ACIDS.has(match[2])) {
      const pH = -Math.log10(concentration);
      return (
        `${match[2]} is a strong acid, so [H+] = ${match[1]} M and ` +
        `pH = -log10(${match[1]}) = ${pH.toFixed(2)}.`
      );
    }
    if (concentration > 0 && STRONG_BASES.has(match[2])) {
      const pOH = -Math.log10(concentration);
      return (
        `${match[2]} is a strong base, so pOH = ${pOH.toFixed(2)} and ` +
        `pH = 14 - pOH = ${(14 - pOH).toFixed(2)}.`
      );
    }
  }
  return FALLBACK;
}

/** The answer and where it came from: the chat model with a key, else the rule book. */
async function answer(question) {
  const key = process.env.OPENAI_API_KEY;
  if (!key) return { answer: ruleAnswer(question), source: "rules" };
  try {
    const response = await fetch(`${OPENAI_URL}/chat/completions`, {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body: JSON.stringify({
        model: OPENAI_MODEL,
        max_tokens: 200,
        messages: [
          { role: "system", content: SYSTEM_PROMPT },
          { role: "user", content: question },
        ],
      }),
      signal: AbortSignal.timeout(20000),
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const content = (await response.json()).choices?.[0]?.message?.content?.trim();
    if (content) return { answer: content, source: `llm:${OPENAI_MODEL}` };
    throw new Error("empty answer");
  } catch (error) {
    console.log(`the chat model failed (${error.message}); answering from the rule book`);
    return { answer: ruleAnswer(question), source: "rules" };
  }
}

// --- the sidecar ----------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One call to the sidecar: the parsed JSON answer (null for 204); throws on an error status. */
async function sidecar(method, path, body) {
  const response = await fetch(`${SIDECAR}${path}`, {
    method,
    headers:
      body === undefined ? AUTHORIZATION : { ...AUTHORIZATION, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const document = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = document?.error || {};
    throw new Error(`${error.code || response.status}: ${error.message || text}`);
  }
  return document;
}

/** Answer, acknowledge or reject one delivery; a failure nacks it to be redelivered later. */
async function handle(delivery) {
  const settle = (action, body) =>
    sidecar("POST", `/v1/deliveries/${encodeURIComponent(delivery.id)}/${action}`, body);
  try {
    if (delivery.type === "homework.question") {
      const question = delivery.payload?.question;
      if (typeof question !== "string" || !question) {
        await settle("reject", { reason: "payload.question must be a non-empty string" });
        return;
      }
      console.log(`question from ${delivery.from}: ${question}`);
      await settle("reply", { type: "homework.answer", payload: await answer(question) });
      await settle("ack");
    } else if (delivery.type === "homework.thanks") {
      console.log(`note from ${delivery.from}: ${delivery.payload?.text}`);
      await settle("ack");
    } else {
      await settle("reject", { reason: `no handler for message type '${delivery.type}'` });
    }
  } catch (error) {
    console.log(`delivery ${delivery.id} failed (${error.message}); redelivering`);
    await settle("nack", { delay_ms: 1000 }).catch(() => {});
  }
}

/** Read the server-sent events of GET /v1/deliveries until the stream ends. */
async function consume() {
  const response = await fetch(`${SIDECAR}/v1/deliveries`, {
    headers: { ...AUTHORIZATION, Accept: "text/event-stream" },
  });
  if (!response.ok) throw new Error(`GET /v1/deliveries: HTTP ${response.status}`);
  const decoder = new TextDecoder();
  let buffer = "";
  let event = { type: "message", data: [] };
  for await (const chunk of response.body) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
      if (line === "") {
        if (event.type === "message" && event.data.length) {
          handle(JSON.parse(event.data.join("\n"))); // settles itself; never rejects
        }
        event = { type: "message", data: [] };
      } else if (line.startsWith("event:")) {
        event.type = line.slice(6).trim();
      } else if (line.startsWith("data:")) {
        event.data.push(line.slice(5).replace(/^ /, ""));
      } // `id:` lines repeat the message id; `:` lines are keepalive comments
    }
  }
}

async function main() {
  let self;
  for (let delay = 200; ; delay = Math.min(delay * 2, 5000)) {
    try {
      self = await sidecar("GET", "/v1/self");
      break;
    } catch (error) {
      console.log(`waiting for the sidecar at ${SIDECAR} (${error.cause?.code || error.message})`);
      await sleep(delay);
    }
  }
  const answers = process.env.OPENAI_API_KEY ? `llm:${OPENAI_MODEL}` : "rules";
  console.log(
    `professor ${self.id} on node ${process.version}, ` +
      `capabilities ${self.capabilities.join(",")}, answers from ${answers}`,
  );
  await sidecar("PUT", "/v1/self", {
    metadata: {
      language: "javascript",
      runtime: `node ${process.version}`,
      answers,
      topics: ["molar mass", "moles", "pH"],
    },
  });
  console.log("metadata published; taking deliveries");
  for (let delay = 200; ; delay = Math.min(delay * 2, 5000)) {
    const started = Date.now();
    try {
      await consume();
      console.log("the sidecar ended the delivery stream; resubscribing");
    } catch (error) {
      console.log(`delivery stream failed (${error.cause?.code || error.message}); resubscribing`);
    }
    if (Date.now() - started > 60000) delay = 200; // it ran a while: start backing off afresh
    await sleep(delay);
  }
}

for (const signal of ["SIGINT", "SIGTERM"]) {
  // Deliveries in flight are not acked: the sidecar redelivers them when their lease runs out.
  process.on(signal, () => {
    console.log("professor stopped");
    process.exit(0);
  });
}

if (require.main === module) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}

module.exports = { answer, ruleAnswer, molarMass, parseFormula };

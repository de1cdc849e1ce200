"""vbatch engine runner: one inference engine behind a JSON-lines protocol.

The vbatch GPU worker (Go, internal/engine/process.go) ships this file inside its
binary and starts it as

    python3 -u runner.py --config '<json>'

with config = {backend, model, max_model_len, gpu_memory_utilization,
enable_prefix_caching, tensor_parallel_size, kv_cache_dtype, load_format,
sim: {tokens_per_second, batch_size, prefill_factor, load_seconds, crash_on}}; the
transformers backend also reads sampling {temperature, top_p, top_k, seed} (its one
sampling setting) and attn_implementation.

Protocol (one JSON object a line; stdout carries only these, stderr is the log):
  runner -> {"event":"ready", backend, simulated, model, versions, max_model_len,
             kv_cache_tokens, kv_cache_gib, weights_gib, max_concurrency,
             max_num_seqs, load_seconds, devices}        once the model is loaded
  runner -> {"event":"failed","message":...}             load failed; exit status 2
  worker -> {"op":"submit","id":...,"request":<batchfile.Request JSON>}
  worker -> {"op":"abort","id":...}
  worker -> {"op":"shutdown"}                            abort what is left, exit 0
  runner -> {"event":"result","id","text","finish_reason","prompt_tokens",
             "completion_tokens","cached_tokens","simulated"}  as each finishes;
             the vllm backend adds "choices" (each choice's text, finish_reason,
             completion_tokens, logprobs) when n > 1 or logprobs were asked, and
             "logprobs" (OpenAI's chat shape) for the first choice
  runner -> {"event":"error","id","code","message"}      that request alone failed
stdin EOF finishes what was submitted, then exits 0. On every exit with status 0
the runner logs "served N requests" on stderr: N counts the submit commands it
received (rejected ones included), the engine's own count of the work it was
given; the worker's log carries it, and tests that must prove the engine was
never asked (a run answered from vbatch's answer cache) read it there. A GPU engine that breaks while
serving exits with status 4; the sim's crash_on fault exits with status 3.

The runner is this file and its siblings, written next to it by the worker:
protocol.py (what every backend shares), vllm_backend.py, hf_backend.py (the
transformers backend) and models/ (configs for load_format=dummy). Only the
standard library is imported at module level. The vllm and transformers backends
import their heavy packages inside load(), so the sim backend runs wherever python3
does, and a missing package is a clean load error that the worker reports.
"""

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import random
import sys
import threading
import time
from collections import OrderedDict, deque

from protocol import (  # noqa: F401  (re-exported: tests and direct.py use runner.X)
    CODE_ENGINE_ERROR,
    CODE_INVALID_REQUEST,
    CODE_PROMPT_TOO_LONG,
    EXIT_LOAD_FAILED,
    EXIT_SIM_CRASH,
    Backend,
    Emitter,
    RequestError,
    message_texts,
    response_format_type,
)
from hf_backend import TransformersBackend
from vllm_backend import VLLMBackend

# Part of every answer-cache key (the ready event's versions): raise it when a
# backend may answer the same request differently. 2: the transformers backend
# runs CUDA graphs.
RUNNER_VERSION = "2"

# Every log line of the sim backend carries this prefix, so nobody mistakes a
# simulated run's log for a GPU's.
SIM_LOG_PREFIX = "vbatch-runner[sim: SIMULATED, no real inference]"


# ---------------------------------------------------------------------------
# The sim backend: a model of a continuous-batching GPU, and its answers.

SIM_BYTES_PER_TOKEN = 4  # the simulated tokenizer: 4 bytes of UTF-8 a token

_RECOMMENDATIONS = ["Strong Yes", "Yes", "Maybe", "No", "Strong No"]
_RATINGS = ["Great", "Good", "Okay", "Poor"]  # the rubric's scale (internal/synth/rubric.go)
_SCHOOLS = ["MIT", "Stanford", "Carnegie Mellon", "UC Berkeley", "Georgia Tech",
            "the University of Waterloo", "ETH Zurich", "a state university",
            "a regional college", "IIT Bombay", "the University of Toronto"]
_COMPANIES = ["Microsoft", "Bloomberg", "Google", "Stripe", "Amazon", "Datadog",
              "a Series B startup", "a mid-sized consultancy", "Shopify", "Atlassian",
              "a regional bank", "an early-stage fintech"]
_ROLES = ["Software Engineer", "Senior Software Engineer", "Backend Engineer",
          "Data Engineer", "Site Reliability Engineer", "Software Engineer Intern",
          "Full Stack Developer", "Machine Learning Engineer"]

_LEADS = {
    "reasoning": "The candidate is a {rec_word} fit: {school} education, experience at {company} and {company2}, and {years} years in engineering roles.",
    "educational_pedigree": "The candidate studied Computer Science at {school}, which reads as a {rating_word} educational signal.",
    "company_pedigree": "Experience at {company} and {company2} gives a {rating_word} company pedigree.",
    "trajectory": "Over {years} years the candidate moved from {role2} to {role}, a {rating_word} trajectory.",
    "is_software_engineer": "The recent titles, most recently {role}, {swe_phrase}.",
}

_EXTRAS = {
    "reasoning": [
        "The resume shows ownership of production systems rather than only coursework.",
        "The evidence for seniority is thinner than the titles suggest, so the interview should probe scope.",
        "Promotions came at a steady pace and the scope of work grew with each role.",
        "The profile matches the role's core requirements, with some gaps in distributed systems.",
        "Communication and collaboration are mentioned but not demonstrated with concrete outcomes.",
        "On balance the strengths outweigh the open questions for this position.",
    ],
    "educational_pedigree": [
        "The degree is in a directly relevant field and includes systems and algorithms coursework.",
        "A graduate degree or research experience would strengthen this signal further.",
        "Teaching assistant work suggests a solid grasp of the fundamentals.",
        "The institution is well known to hiring teams, which helps calibrate the signal.",
        "Grades are not listed, so the rating rests on the institution and the programme.",
    ],
    "company_pedigree": [
        "Both employers run large production systems with a high engineering bar.",
        "The smaller employer offered broad ownership, which partly offsets its lower profile.",
        "Tenure at each company was long enough to ship and maintain real features.",
        "The companies are respected in their sectors, though not all are known for engineering.",
        "Internships at recognised firms add to the signal from the full-time roles.",
    ],
    "trajectory": [
        "The move from intern to full-time engineer happened within a year.",
        "Responsibilities grew from single features to owning a service end to end.",
        "There is a gap of several months between roles that the resume does not explain.",
        "Lateral moves outnumber promotions, which tempers the trajectory rating.",
        "Recent work includes mentoring newer engineers, a sign of growing seniority.",
    ],
    "is_software_engineer": [
        "The described work is writing, testing and operating production code.",
        "Most bullet points describe code the candidate wrote and shipped.",
        "Tooling, code review and on-call duties all appear in the recent roles.",
        "Some roles mix engineering with analysis, but coding is the main activity.",
    ],
}

# When the simulated verdict is "not a software engineer", its reasoning must agree.
_EXTRAS_NOT_SWE = [
    "Most bullet points describe analysis, reporting or project coordination.",
    "Code appears only in side projects, not in the described day-to-day work.",
    "The titles mention engineering, but the duties read as support and operations.",
    "Recent roles centre on product management rather than building software.",
]

_REC_WORDS = {"Strong Yes": "strong", "Yes": "good", "Maybe": "possible",
              "No": "weak", "Strong No": "poor"}
_RATING_WORDS = {"Great": "strong", "Good": "solid", "Okay": "moderate", "Poor": "weak"}


def sim_prompt_tokens(request):
    """Prompt tokens by the simulated tokenizer: bytes of all message contents and
    the prompt, divided by 4 and rounded up (at least 1, as a real template adds
    tokens of its own)."""
    size = sum(len(t.encode("utf-8")) for t in message_texts(request))
    return max(1, math.ceil(size / SIM_BYTES_PER_TOKEN))


def sim_tokens(text):
    return math.ceil(len(text.encode("utf-8")) / SIM_BYTES_PER_TOKEN)


def sim_answer_seed(request):
    """A stable number from what the answer depends on: the messages, the prompt
    and the sampling seed. Not the id or custom_id, so the same request always gets
    the same answer, in any process."""
    sampling = request.get("sampling") or {}
    key = json.dumps([request.get("messages"), request.get("prompt"), sampling.get("seed")],
                     sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def sim_answer_text(request, structured):
    """The full answer before max_tokens and stop apply: the candidate-evaluation
    JSON of the seed report when structured, plain prose of the same size otherwise.
    Sizes are drawn from 250-370 simulated tokens (mean 310, as the seed's 308)."""
    rng = random.Random(sim_answer_seed(request))
    target = rng.randint(250, 370) * SIM_BYTES_PER_TOKEN
    rec = rng.choice(_RECOMMENDATIONS)
    ratings = {k: rng.choice(_RATINGS)
               for k in ("educational_pedigree", "company_pedigree", "trajectory")}
    is_swe = rng.random() < 0.85
    companies = rng.sample(_COMPANIES, 2)
    roles = rng.sample(_ROLES, 2)
    facts = {
        "school": rng.choice(_SCHOOLS), "company": companies[0], "company2": companies[1],
        "role": roles[0], "role2": roles[1], "years": rng.randint(2, 12),
        "rec_word": _REC_WORDS[rec],
        "swe_phrase": "show a software engineer" if is_swe else "describe mostly non-engineering work",
    }
    order = ["reasoning", "educational_pedigree", "company_pedigree", "trajectory",
             "is_software_engineer"]
    parts = {}
    for field in order:
        word = _RATING_WORDS.get(ratings.get(field, ""), "")
        parts[field] = [_LEADS[field].format(rating_word=word, **facts)]
    pools = dict(_EXTRAS)
    if not is_swe:
        pools["is_software_engineer"] = _EXTRAS_NOT_SWE
    extras = {field: rng.sample(pools[field], len(pools[field])) for field in order}

    def render():
        said = {field: " ".join(parts[field]) for field in order}
        if not structured:
            return "\n\n".join([f"Recommendation: {rec}."] + [said[f] for f in order])
        analysis = {field: {"rating": ratings[field], "reasoning": said[field]}
                    for field in ("educational_pedigree", "company_pedigree", "trajectory")}
        analysis["is_software_engineer"] = {"value": is_swe,
                                            "reasoning": said["is_software_engineer"]}
        return json.dumps({"recommendation": rec, "reasoning": said["reasoning"],
                           "analysis": analysis}, indent=2)

    text = render()
    step = 0
    while len(text) < target:
        field = order[step % len(order)]
        pool = extras[field]
        sentence = pool[(step // len(order)) % len(pool)]
        parts[field].append(sentence)
        grown = render()
        if len(grown) > target:
            # Cut the last sentence short so the answer lands near its drawn size.
            words = sentence.rstrip(".").split()
            over = len(grown) - target
            while words and over > 0:
                over -= len(words.pop()) + 1
            if words:
                parts[field][-1] = " ".join(words).rstrip(",;") + "."
            else:
                parts[field].pop()
            return render()
        text = grown
        step += 1
    return text


def sim_validate(request):
    """What the sim engine cannot honour is an error for the request, never dropped."""
    sampling = request.get("sampling") or {}
    n = sampling.get("n")
    if n is not None and n != 1:
        raise RequestError(CODE_INVALID_REQUEST, "sim backend does not support n>1")
    if sampling.get("logprobs") or sampling.get("top_logprobs") is not None:
        raise RequestError(CODE_INVALID_REQUEST, "sim backend does not support logprobs")
    max_tokens = sampling.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise RequestError(CODE_INVALID_REQUEST, "max_tokens must be a positive integer")
    if not message_texts(request):
        raise RequestError(CODE_INVALID_REQUEST, "request has no messages and no prompt")


def sim_generate(request, max_model_len):
    """The whole simulated answer of one request: a dict of text, finish_reason,
    prompt_tokens, completion_tokens. Raises RequestError for this request alone."""
    sim_validate(request)
    sampling = request.get("sampling") or {}
    structured = response_format_type(sampling) != "text"
    prompt_tokens = sim_prompt_tokens(request)
    if prompt_tokens >= max_model_len:
        raise RequestError(
            CODE_PROMPT_TOO_LONG,
            f"prompt is {prompt_tokens} tokens (simulated tokenizer), "
            f"max_model_len is {max_model_len}")
    limit = max_model_len - prompt_tokens
    if sampling.get("max_tokens") is not None:
        limit = min(limit, sampling["max_tokens"])

    text = sim_answer_text(request, structured)
    finish_reason = "stop"
    stops = sampling.get("stop") or []
    cuts = [text.find(s) for s in stops if s and s in text]
    if cuts:
        text = text[:min(cuts)]
    completion_tokens = sim_tokens(text)
    if completion_tokens > limit:
        text = text.encode("utf-8")[:limit * SIM_BYTES_PER_TOKEN].decode("utf-8", "ignore")
        completion_tokens = limit
        finish_reason = "length"
    return {"text": text, "finish_reason": finish_reason,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}


class SimPrefixCache:
    """A model of vLLM's automatic prefix cache: the KV cache is cut into blocks of
    block_tokens tokens, a full prompt block is named by its bytes and all the bytes
    before it (a hash chain), and the blocks stay cached, least recently used first
    out, within capacity_blocks. A request reuses its leading run of cached blocks,
    less at least one prompt token that the engine always computes. Every request's
    other blocks, its completion's included, take room too, as they do on a GPU, so a
    prefix that is not reused for a while is evicted."""

    def __init__(self, block_tokens, capacity_blocks):
        self.block_bytes = block_tokens * SIM_BYTES_PER_TOKEN
        self.block_tokens = block_tokens
        self.capacity = capacity_blocks
        self._blocks = OrderedDict()
        self._unique = 0  # names of blocks no other request can share

    def admit(self, request, prompt_tokens, completion_tokens):
        """Returns the prompt tokens served from the cache, and caches the request's
        blocks."""
        data = "\x00".join(message_texts(request)).encode("utf-8")
        keys, key = [], 0
        for start in range(0, len(data) - self.block_bytes + 1, self.block_bytes):
            key = hash((key, data[start:start + self.block_bytes]))
            keys.append(key)
        hits = 0
        for key in keys:
            if key not in self._blocks:
                break
            hits += 1
        for key in keys:
            self._blocks[key] = None
            self._blocks.move_to_end(key)
        partial = prompt_tokens - len(keys) * self.block_tokens
        for _ in range(math.ceil(max(partial + completion_tokens, 0) / self.block_tokens)):
            self._unique += 1
            self._blocks[("own", self._unique)] = None
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
        return max(min(hits * self.block_tokens, prompt_tokens - 1), 0)


class _SimJob:
    __slots__ = ("rid", "request", "answer", "work_left", "crash", "aborted")

    def __init__(self, rid, request, answer, work, crash):
        self.rid = rid
        self.request = request
        self.answer = answer
        self.work_left = work
        self.crash = crash
        self.aborted = False


class SimBackend(Backend):
    """No GPU: a continuous-batching engine in time alone. At most batch_size requests
    run at once (FIFO beyond); each running request advances at
    tokens_per_second / batch_size work tokens a second, so a full batch delivers
    tokens_per_second and an engine fed b < batch_size requests only
    tokens_per_second * b / batch_size, as a memory-bound GPU does. A request's work
    is prompt_tokens / prefill_factor + completion_tokens. prefill_factor defaults to 1,
    so tokens_per_second counts prompt + completion tokens, the way the seed report
    and vbatch's reports count throughput; a larger factor makes prompts cheaper.

    With enable_prefix_caching (the default, as in vLLM), a request's prompt tokens
    found in the simulated prefix cache (SimPrefixCache, of kv_cache_tokens, default
    batch_size * max_model_len) are reported as cached_tokens and cost no prefill
    work: the cache is looked up when a request enters the batch.

    The scheduler is event driven: it sleeps until the next request would finish or
    a submit or abort wakes it, so many fast simulated engines cost little CPU."""

    name = "sim"
    simulated = True

    def __init__(self, config, emitter, log):
        super().__init__(config, emitter, log)
        sim = config.get("sim") or {}
        self.tokens_per_second = float(sim.get("tokens_per_second") or 2500)
        self.batch_size = int(sim.get("batch_size") or 64)
        self.prefill_factor = float(sim.get("prefill_factor") or 1)
        load_seconds = sim.get("load_seconds")
        self.load_seconds = 0.2 if load_seconds is None else float(load_seconds)
        self.crash_on = sim.get("crash_on") or ""
        self.max_model_len = int(config.get("max_model_len") or 4096)
        if self.tokens_per_second <= 0 or self.batch_size < 1 or self.prefill_factor <= 0:
            raise ValueError("sim tokens_per_second, batch_size and prefill_factor must be positive")
        self.kv_cache_tokens = int(sim.get("kv_cache_tokens") or self.batch_size * self.max_model_len)
        self.prefix_cache = None
        if config.get("enable_prefix_caching", True) is not False:
            block = int(sim.get("block_tokens") or 16)
            self.prefix_cache = SimPrefixCache(block, max(self.kv_cache_tokens // block, 1))
        self._cond = threading.Condition()
        self._waiting = deque()
        self._active = {}
        self._jobs = {}
        self._stopping = False
        self._drain = False
        self._thread = threading.Thread(target=self._schedule, name="sim-scheduler", daemon=True)

    def load(self):
        time.sleep(self.load_seconds)
        self._thread.start()
        self.log.info("loaded: tokens_per_second=%g batch_size=%d prefill_factor=%g "
                      "max_model_len=%d (no model, no GPU)", self.tokens_per_second,
                      self.batch_size, self.prefill_factor, self.max_model_len)
        return {
            "model": self.config.get("model") or "sim",
            "max_model_len": self.max_model_len,
            # The simulated KV cache holds batch_size full-length requests unless
            # set; there are no weights and no GPU memory behind these numbers.
            "kv_cache_tokens": self.kv_cache_tokens,
            "kv_cache_gib": 0.0,
            "weights_gib": 0.0,
            "max_concurrency": float(self.batch_size),
            "max_num_seqs": self.batch_size,
            "versions": {"sim": RUNNER_VERSION},
        }

    def submit(self, rid, request):
        answer = sim_generate(request, self.max_model_len)
        crash = bool(self.crash_on) and any(self.crash_on in t for t in message_texts(request))
        work = answer["prompt_tokens"] / self.prefill_factor + answer["completion_tokens"]
        with self._cond:
            if rid in self._jobs:
                raise RequestError(CODE_ENGINE_ERROR, f"duplicate request id {rid}")
            job = _SimJob(rid, request, answer, work, crash)
            self._jobs[rid] = job
            self._waiting.append(job)
            self._cond.notify()

    def abort(self, rid):
        with self._cond:
            job = self._jobs.pop(rid, None)
            if job is None:
                return
            job.aborted = True  # a waiting job is skipped when its turn comes
            self._active.pop(rid, None)
            self._cond.notify()

    def close(self, drain):
        with self._cond:
            self._stopping = True
            self._drain = drain
            if not drain:
                self._waiting.clear()
                self._active.clear()
                self._jobs.clear()
            self._cond.notify()
        self._thread.join()

    def _schedule(self):
        rate = self.tokens_per_second / self.batch_size  # work tokens/s per running request
        last = time.monotonic()
        while True:
            finished = []
            crash = None
            with self._cond:
                now = time.monotonic()
                progress = (now - last) * rate
                last = now
                for job in list(self._active.values()):
                    job.work_left -= progress
                    if job.work_left <= 1e-6:
                        del self._active[job.rid]
                        del self._jobs[job.rid]
                        finished.append(job)
                while self._waiting and len(self._active) < self.batch_size:
                    job = self._waiting.popleft()
                    if job.aborted:
                        continue
                    if job.crash:
                        crash = job
                        break
                    if self.prefix_cache is not None:
                        a = job.answer
                        cached = self.prefix_cache.admit(job.request, a["prompt_tokens"], a["completion_tokens"])
                        a["cached_tokens"] = cached
                        job.work_left -= cached / self.prefill_factor
                    job.request = None  # the answer is all that is left to send
                    self._active[job.rid] = job
                if not finished and crash is None:
                    if self._stopping and not (self._drain and (self._active or self._waiting)):
                        return
                    timeout = None
                    if self._active:
                        timeout = min(j.work_left for j in self._active.values()) / rate
                    self._cond.wait(timeout)
                    continue
            # Results go out without the lock, so submits are never held up by stdout.
            for job in finished:
                a = job.answer
                self.emitter.result(job.rid, a["text"], a["finish_reason"],
                                    a["prompt_tokens"], a["completion_tokens"],
                                    a.get("cached_tokens", 0))
            if crash is not None:
                self.log.error("crash_on %r matched request %s: exiting with status %d "
                               "(a simulated engine crash)", self.crash_on, crash.rid,
                               EXIT_SIM_CRASH)
                logging.shutdown()
                os._exit(EXIT_SIM_CRASH)


BACKENDS = {b.name: b for b in (SimBackend, VLLMBackend, TransformersBackend)}


# ---------------------------------------------------------------------------
# The process: stdout for the protocol, stderr for the log, a reader thread.

class _PrefixFormatter(logging.Formatter):
    """Prefixes every line of a record, tracebacks included: the worker logs each
    stderr line on its own, and each must say which backend (and for sim, that it
    is simulated)."""

    def __init__(self, prefix):
        super().__init__("%(levelname)s %(message)s")
        self._prefix = prefix

    def format(self, record):
        return "\n".join(f"{self._prefix} {line}" for line in super().format(record).splitlines())


def log_prefix(backend_name):
    if backend_name == SimBackend.name:
        return SIM_LOG_PREFIX
    return f"vbatch-runner[{backend_name}]"


def setup_logging(backend_name):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrefixFormatter(log_prefix(backend_name)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    log = logging.getLogger("vbatch.runner")

    def excepthook(exc_type, exc, tb):
        log.critical("uncaught exception", exc_info=(exc_type, exc, tb))

    sys.excepthook = excepthook
    threading.excepthook = lambda args: log.critical(
        "uncaught exception in thread %s", args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
    return log


def take_stdout():
    """Keep the real stdout for protocol lines and point fd 1 (and sys.stdout) at
    stderr, so a library that prints can never corrupt the protocol."""
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def read_commands(stream, backend, emitter, log, served=None):
    """Feeds the backend from stdin until EOF or shutdown; returns True to drain
    (EOF) and False to abort (shutdown). served["requests"], when given, counts
    the submit commands as they arrive."""
    for line in stream:
        line = line.strip()
        if not line:
            continue
        try:
            command = json.loads(line)
            op = command.get("op")
        except (ValueError, AttributeError):
            log.error("ignoring a command that is not a JSON object: %.200s", line)
            continue
        if op == "submit":
            if served is not None:
                served["requests"] += 1
            rid = str(command.get("id"))
            try:
                request = command.get("request")
                if not isinstance(request, dict):
                    raise RequestError(CODE_INVALID_REQUEST, "request must be an object")
                backend.submit(rid, request)
            except RequestError as e:
                emitter.error(rid, e.code, e.message)
            except Exception as e:  # one request's failure must not stop the engine
                log.exception("request %s failed", rid)
                emitter.error(rid, CODE_ENGINE_ERROR, f"{type(e).__name__}: {e}")
        elif op == "abort":
            backend.abort(str(command.get("id")))
        elif op == "shutdown":
            log.info("shutdown: aborting what is left")
            return False
        else:
            log.error("ignoring unknown op %r", op)
    log.info("stdin closed: finishing what was submitted")
    return True


def ready_event(backend, config, info, load_seconds):
    event = {
        "event": "ready",
        "backend": backend.name,
        "simulated": backend.simulated,
        "model": config.get("model") or "",
        "max_model_len": config.get("max_model_len") or 0,
        "tensor_parallel_size": config.get("tensor_parallel_size") or 1,
        "enable_prefix_caching": config.get("enable_prefix_caching", True) is not False,
        "gpu_memory_utilization": config.get("gpu_memory_utilization") or 0.0,
        "devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }
    versions = {"python": platform.python_version(), "runner": RUNNER_VERSION}
    versions.update(info.pop("versions", {}))
    event.update(info)
    event["versions"] = versions
    event["load_seconds"] = round(load_seconds, 3)
    return event


def main(argv=None):
    parser = argparse.ArgumentParser(description="vbatch engine runner (JSON lines on stdin/stdout)")
    parser.add_argument("--config", required=True, help="engine config as a JSON object")
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    name = config.get("backend") or ""

    protocol = take_stdout()
    log = setup_logging(name)
    backend_class = BACKENDS.get(name)
    emitter = Emitter(protocol, simulated=bool(backend_class and backend_class.simulated))
    if backend_class is None:
        message = f"unknown backend {name!r} (known: {', '.join(sorted(BACKENDS))})"
        log.error("%s", message)
        emitter.emit({"event": "failed", "message": message})
        return EXIT_LOAD_FAILED

    started = time.monotonic()
    try:
        backend = backend_class(config, emitter, log)
        info = backend.load() or {}
    except BaseException as e:  # SystemExit from a library included: say why we stop
        log.exception("%s backend failed to load", name)
        emitter.emit({"event": "failed", "message": f"{name} backend: {e}"})
        return EXIT_LOAD_FAILED
    emitter.emit(ready_event(backend, config, dict(info), time.monotonic() - started))

    stop = threading.Event()
    outcome = {"drain": True}
    served = {"requests": 0}

    def reader():
        try:
            outcome["drain"] = read_commands(sys.stdin, backend, emitter, log, served)
        finally:
            stop.set()

    threading.Thread(target=reader, name="commands", daemon=True).start()
    backend.serve(stop)
    backend.close(outcome["drain"])
    log.info("served %d requests", served["requests"])
    log.info("exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())

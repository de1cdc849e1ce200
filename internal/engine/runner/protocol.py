"""What every backend of the vbatch engine runner shares: the error codes and exit
statuses the worker tells apart, the event writer, the Backend base class, and the
request helpers (message texts, chat messages, prompt tokens).

It is its own module, not part of runner.py, because runner.py runs as __main__:
a backend module that imported runner would load a second copy of it, and the
runner would then fail to recognise that copy's RequestError. Standard library
only, like every module of the runner at its top level.
"""

import json
import threading

# Error codes of internal/batchfile/request.go that an engine may report.
CODE_PROMPT_TOO_LONG = "prompt_too_long"
CODE_INVALID_REQUEST = "invalid_request"
CODE_ENGINE_ERROR = "engine_error"

# Exit statuses the worker can tell apart.
EXIT_LOAD_FAILED = 2
EXIT_SIM_CRASH = 3
EXIT_ENGINE_FAILED = 4  # a GPU engine broke while serving; the worker restarts it

GIB = float(1 << 30)


class RequestError(Exception):
    """A failure of one request alone; the runner reports it and goes on."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Emitter:
    """The one writer of protocol events: a line each, under a lock, flushed at once
    so the worker sees every result as soon as it exists."""

    def __init__(self, stream, simulated=False):
        self._stream = stream
        self._lock = threading.Lock()
        self._simulated = simulated

    def emit(self, event):
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def result(self, rid, text, finish_reason, prompt_tokens, completion_tokens, cached_tokens=0,
               **extra):
        """extra carries what a backend knows beyond the five counts (choices for
        n > 1, logprobs); the worker ignores fields it does not read."""
        event = {
            "event": "result",
            "id": rid,
            "text": text,
            "finish_reason": finish_reason,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cached_tokens": cached_tokens,
            "simulated": self._simulated,
        }
        event.update(extra)
        self.emit(event)

    def error(self, rid, code, message):
        self.emit({"event": "error", "id": rid, "code": code, "message": message})


class Backend:
    """An engine behind the protocol. The command reader calls submit and abort from
    its thread; the main thread runs serve() until the reader stops it, so a backend
    whose engine loop must own the main thread (vLLM's step loop) overrides serve.
    Finished requests go to self.emitter.result / .error, from any thread."""

    name = "base"
    simulated = False

    def __init__(self, config, emitter, log):
        self.config = config
        self.emitter = emitter
        self.log = log

    def load(self):
        """Load the model; return the ready event's fields that this backend knows."""
        raise NotImplementedError

    def submit(self, rid, request):
        """Start a request; raise RequestError to fail it alone."""
        raise NotImplementedError

    def abort(self, rid):
        """Forget a request; no event follows for it."""
        raise NotImplementedError

    def serve(self, stop):
        stop.wait()

    def close(self, drain):
        """Stop: finish what was submitted when drain, else abort it."""


# ---------------------------------------------------------------------------
# Request helpers shared by every backend.

def message_texts(request):
    """The text of every message content and of the prompt, in order. A content may
    be a string or a list of parts ({"type":"text","text":...})."""
    texts = []
    messages = request.get("messages") or []
    if not isinstance(messages, list):
        raise RequestError(CODE_INVALID_REQUEST, "messages must be an array")
    for message in messages:
        if not isinstance(message, dict):
            raise RequestError(CODE_INVALID_REQUEST, "each message must be an object")
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
    prompt = request.get("prompt")
    if isinstance(prompt, str) and prompt:
        texts.append(prompt)
    return texts


def response_format_type(sampling):
    fmt = sampling.get("response_format")
    if not fmt:
        return "text"
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise RequestError(CODE_INVALID_REQUEST,
                           "response_format.type must be text, json_object or json_schema")
    return fmt["type"]


def sampling_of(request):
    sampling = request.get("sampling") or {}
    if not isinstance(sampling, dict):
        raise RequestError(CODE_INVALID_REQUEST, "sampling must be an object")
    return sampling


def is_chat(request):
    return request.get("kind") == "chat" or (request.get("kind") is None and "messages" in request)


def chat_messages(request):
    """The request's messages as a chat template expects them: role and a string
    content. Text parts of a content list are joined with newlines, as vLLM's
    OpenAI server does for templates that take string content; any other part (an
    image, audio) is something a text-only runner cannot honour."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(CODE_INVALID_REQUEST, "request has no messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(CODE_INVALID_REQUEST, f"messages[{i}] must be an object with a role")
        content = message.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type", "text") != "text" \
                        or not isinstance(part.get("text"), str):
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise RequestError(CODE_INVALID_REQUEST,
                                       f"messages[{i}] has a {kind} content part; "
                                       "this runner serves text only")
                parts.append(part["text"])
            text = "\n".join(parts)
        else:
            raise RequestError(CODE_INVALID_REQUEST,
                               f"messages[{i}].content must be a string or an array of parts")
        entry = {"role": message["role"], "content": text}
        if isinstance(message.get("name"), str):
            entry["name"] = message["name"]
        out.append(entry)
    return out


def prompt_token_ids(tokenizer, request):
    """Tokenizes a request the way vLLM's OpenAI server does: a chat goes through the
    model's chat template with the generation prompt appended and is encoded without
    adding special tokens (the template writes BOS itself); a completion prompt is
    encoded with them. tokenizer is a Hugging Face tokenizer, vLLM's, or the byte
    tokenizer: all three take these calls."""
    if is_chat(request):
        messages = chat_messages(request)
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # a template that rejects the conversation (roles, no template)
            raise RequestError(CODE_INVALID_REQUEST, f"chat template: {type(e).__name__}: {e}") from e
        return list(tokenizer.encode(text, add_special_tokens=False))
    prompt = request.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise RequestError(CODE_INVALID_REQUEST, "request has no messages and no prompt")
    return list(tokenizer.encode(prompt, add_special_tokens=True))


def prompt_too_long(prompt_tokens, max_model_len):
    """A prompt that leaves no room for one generated token is too long (vLLM rejects
    prompt_len == max_model_len as well)."""
    return RequestError(CODE_PROMPT_TOO_LONG,
                        f"prompt is {prompt_tokens} tokens, max_model_len is {max_model_len}")

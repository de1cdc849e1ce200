"""A stand-in for the vllm package, for the runner's contract tests only (see
../README.md). The names exported here are the ones real vLLM exports at its top
level."""

__version__ = "0.11.0+vbatch.contract"

from vllm.engine.arg_utils import EngineArgs  # noqa: E402
from vllm.engine.llm_engine import LLMEngine  # noqa: E402
from vllm.outputs import CompletionOutput, RequestOutput  # noqa: E402
from vllm.sampling_params import SamplingParams  # noqa: E402

__all__ = ["CompletionOutput", "EngineArgs", "LLMEngine", "RequestOutput", "SamplingParams",
           "__version__"]

"""vllm.engine.llm_engine: in V1-only vLLM, the V1 LLMEngine under its old path."""

from vllm.v1.engine.llm_engine import LLMEngine

__all__ = ["LLMEngine"]

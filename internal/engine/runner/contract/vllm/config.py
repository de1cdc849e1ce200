"""vllm.config: the parts of VllmConfig the runner reads, with real vLLM's names."""

from dataclasses import dataclass


@dataclass
class ModelConfig:
    model: str
    max_model_len: int
    max_logprobs: int


@dataclass
class CacheConfig:
    block_size: int
    num_gpu_blocks: int | None
    gpu_memory_utilization: float
    enable_prefix_caching: bool
    cache_dtype: str


@dataclass
class ParallelConfig:
    tensor_parallel_size: int


@dataclass
class VllmConfig:
    model_config: ModelConfig
    cache_config: CacheConfig
    parallel_config: ParallelConfig

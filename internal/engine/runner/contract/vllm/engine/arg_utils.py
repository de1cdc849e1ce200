"""vllm.engine.arg_utils: EngineArgs, a dataclass holding only fields that real
vLLM's EngineArgs has (same names, same defaults); a dataclass rejects any other
keyword with a TypeError, as vLLM's does. create_engine_config validates what the
runner passes the way vLLM's config classes do, with a ValueError."""

from dataclasses import dataclass

from vllm.config import CacheConfig, ModelConfig, ParallelConfig, VllmConfig

_LOAD_FORMATS = ("auto", "pt", "safetensors", "npcache", "dummy", "tensorizer", "sharded_state",
                 "gguf", "bitsandbytes", "mistral", "runai_streamer", "fastsafetensors")
_KV_CACHE_DTYPES = ("auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc")
_DEFAULT_MAX_MODEL_LEN = 2048  # the fake model's context, as a config.json would give it


@dataclass
class EngineArgs:
    model: str = "facebook/opt-125m"
    tokenizer: str | None = None
    skip_tokenizer_init: bool = False
    tokenizer_mode: str = "auto"
    trust_remote_code: bool = False
    download_dir: str | None = None
    load_format: str = "auto"
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    seed: int | None = 0
    max_model_len: int | None = None
    pipeline_parallel_size: int = 1
    tensor_parallel_size: int = 1
    block_size: int | None = None
    enable_prefix_caching: bool | None = None
    gpu_memory_utilization: float = 0.90
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    max_logprobs: int = 20
    disable_log_stats: bool = False
    revision: str | None = None
    quantization: str | None = None
    enforce_eager: bool = False

    def __post_init__(self):
        if not self.tokenizer:
            self.tokenizer = self.model

    def create_engine_config(self, usage_context=None, headless=False):
        if self.load_format not in _LOAD_FORMATS:
            raise ValueError(f"Unknown load format: {self.load_format}")
        if self.kv_cache_dtype not in _KV_CACHE_DTYPES:
            raise ValueError(f"Unknown kv cache dtype: {self.kv_cache_dtype}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("GPU memory utilization must be within (0, 1]. Got "
                             f"{self.gpu_memory_utilization}.")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be at least 1, got {self.tensor_parallel_size}")
        if self.model.startswith("missing/"):
            raise OSError(f"{self.model} is not a local folder and is not a valid model identifier "
                          "listed on 'https://huggingface.co/models'")
        max_model_len = self.max_model_len or _DEFAULT_MAX_MODEL_LEN
        if max_model_len > _DEFAULT_MAX_MODEL_LEN:
            raise ValueError(f"User-specified max_model_len ({max_model_len}) is greater than the derived "
                             f"max_model_len (max_position_embeddings={_DEFAULT_MAX_MODEL_LEN}).")
        block_size = self.block_size or 16
        # The fake GPU: 4,096 blocks of KV cache at full memory utilization.
        blocks = int(4096 * self.gpu_memory_utilization)
        return VllmConfig(
            model_config=ModelConfig(model=self.model, max_model_len=max_model_len,
                                     max_logprobs=self.max_logprobs),
            cache_config=CacheConfig(block_size=block_size, num_gpu_blocks=blocks,
                                     gpu_memory_utilization=self.gpu_memory_utilization,
                                     enable_prefix_caching=self.enable_prefix_caching is not False,
                                     cache_dtype=self.kv_cache_dtype),
            parallel_config=ParallelConfig(tensor_parallel_size=self.tensor_parallel_size),
        )


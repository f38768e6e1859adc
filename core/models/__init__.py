"""Models: which model, where it lives, and loading it.

Owns: catalog (the small models people fine-tune, with their architecture numbers), resolve (`bundled:` ids,
local folders and hub ids to a directory) and loading (base, tokenizer, LoRA, adapter model, generation:
the one place that loads).

Imports: only tunewiz.core's shared modules (config, errors, toml, units, detach). The lowest room.
"""

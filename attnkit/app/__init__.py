"""The sequence-to-sequence application built on attnkit's models: the
trainer and the `Translator` it saves (`training`), the `attnkit` command
(`cli`), character and word vocabularies (`vocabulary`), error rates
(`metrics`) and attention plots (`plots`).

The library (`attnkit.ops`, `attnkit.layers`, `attnkit.models`) never
imports this package; `import attnkit.app.training` loads the trainer.
"""

"""Framework integrations, one module per framework, each importing its framework lazily.

``runtel.integrations.lightning`` (``pip install runtel[lightning]``) and
``runtel.integrations.huggingface`` (``pip install runtel[transformers]``); importing one
without its framework raises :class:`runtel.errors.MissingExtraError` naming the extra.
"""

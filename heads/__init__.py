"""Heads: modules that take a backbone's features (``Mapping[str, Tensor]``) and return
``HeadOutput(preds, losses)``, in train and eval mode alike."""

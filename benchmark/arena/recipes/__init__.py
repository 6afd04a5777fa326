"""The frozen recipes every method shares: the training loop (train, evaluate,
recalibrate), the FP starting points (FP checkpoint, FP supernet), the QAT finetune and
the sandwich step of supernet training."""

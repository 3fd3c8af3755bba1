"""The method: models, initializations, the bound engine, losses, regularizers and the ε schedule.

Everything here is a function of tensors and ``torch.nn`` modules; nothing reads or writes files.
"""

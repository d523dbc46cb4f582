"""The science of denoise-study: noise, models, losses, metrics, data, diffusion, training.

Nothing in this package imports Ray, `studies` or `reports`.
"""

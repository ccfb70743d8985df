"""Sampling: from subjects, timelines, intervals and timed captions to conditioning, guidance and the flow sampler
that makes one video; the attention plot of a timeline."""

"""Students: the candidate (spec + KD recipe), cutting by importance, layer maps, vocabulary trimming, quantization."""

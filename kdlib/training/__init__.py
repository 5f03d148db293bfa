"""Training: KD losses and terms, temperature, the distiller, teacher outputs, fine-tuning, the teacher."""

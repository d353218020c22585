"""Pandera contracts per layer (silver, gold), derived from the declarations in data_model/."""

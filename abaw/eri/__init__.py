"""ERI track (Hume-Reaction): 7 emotional reaction intensities per sample."""

EMOTIONS: tuple[str, ...] = (
    "Adoration",
    "Amusement",
    "Anxiety",
    "Disgust",
    "Empathic-Pain",
    "Fear",
    "Surprise",
)
MODALITIES: tuple[str, ...] = ("audio", "visual")

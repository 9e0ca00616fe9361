"""The one exception type of the data pipeline (defined with image reading, which the model package owns)
and the folder layout that error messages quote."""
from kolmogorov_tokenizers.image_io import DataError

__all__ = ["DataError", "EXPECTED_LAYOUT"]

# The layout every training / validation root must have; quoted in error messages.
EXPECTED_LAYOUT = "<root>/train/<class>/<image> and <root>/val/<class>/<image>"

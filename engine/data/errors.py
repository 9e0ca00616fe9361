"""The one exception type of the data pipeline: bad paths, bad layouts, unreadable images."""


class DataError(ValueError):
    """A data problem the user can fix (missing folder, wrong layout, unreadable file).

    Subclasses ValueError so callers that already catch ValueError for bad arguments keep working.
    """


# The layout every training / validation root must have; quoted in error messages.
EXPECTED_LAYOUT = "<root>/train/<class>/<image> and <root>/val/<class>/<image>"

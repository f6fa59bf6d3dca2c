"""Pure array algorithms: no files, no device management; the backend follows the input."""

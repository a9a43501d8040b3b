"""One module per non-grant endpoint, named after its specification."""

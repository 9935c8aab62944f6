"""Ray Serve application: Validator -> Model -> Postprocessor (see app.py)."""

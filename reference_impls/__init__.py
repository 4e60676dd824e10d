"""Reference dropout implementations: each short enough to read as the definition of its name.

Every one is a valid dropcheck TARGET, listed in `CATALOGUE` with the contract it implements.
"""

# (TARGET, contract): the conformance matrix in reports/ and the reference tests iterate this.
CATALOGUE: list[tuple[str, str]] = [
    ("reference_impls.inverted:InvertedDropout", "inverted"),
    ("reference_impls.inverted:inverted_dropout", "inverted"),
    ("reference_impls.classic:ClassicDropout", "classic"),
    ("reference_impls.classic:classic_dropout", "classic"),
    ("reference_impls.numpy_dropout:numpy_dropout", "inverted"),
    ("reference_impls.drop_path:DropPath", "droppath"),
    ("reference_impls.drop_path:drop_path", "droppath"),
    ("reference_impls.torch_builtins:Dropout", "inverted"),
    ("reference_impls.torch_builtins:functional_dropout", "inverted"),
    ("reference_impls.torch_builtins:native_dropout", "inverted"),
    ("reference_impls.torch_builtins:Dropout1d", "channel"),
    ("reference_impls.torch_builtins:Dropout2d", "channel"),
    ("reference_impls.torch_builtins:Dropout3d", "channel"),
    ("reference_impls.torch_builtins:AlphaDropout", "alpha"),
    ("reference_impls.torch_builtins:FeatureAlphaDropout", "feature-alpha"),
]

# Two commands do all set-up on a fresh machine (see README):  `make test`  and  `make demo`.
PY ?= python3
PYTEST_ARGS ?=

.PHONY: install test demo bench

install:
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/dit_forward.py

demo: install
	flashi2v generate --image flashi2v/default_model/examples/test_000002.png \
		--prompt "A photo of a cat, with the camera panning down: a white dotted circle drops down and bounces." \
		--output outputs/demo.mp4

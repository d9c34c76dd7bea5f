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
	$(PY) examples/make_tiny_model.py --output outputs/tiny-random --image outputs/astronaut.png
	flashi2v generate --model outputs/tiny-random --image outputs/astronaut.png \
		--prompt "an astronaut waves at the camera" --output outputs/demo.mp4

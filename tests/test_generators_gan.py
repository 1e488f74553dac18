"""Tests of the GAN generators: BigGAN-deep (tiny random config, real loading code) and the eye DCGAN
(real weights from omniart-eye-generator)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import zipfile

import numpy as np
import pytest
import torch

from cpia_cuda.generators.base import GeneratorError
from conftest import default_dtype

HAS_BIGGAN_CODE = importlib.util.find_spec("pytorch_pretrained_biggan") is not None
HAS_EYES_PACKAGE = importlib.util.find_spec("omniart_eye_generator") is not None
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
HAS_CUDA = torch.cuda.is_available()

needs_biggan = pytest.mark.skipif(not HAS_BIGGAN_CODE, reason="pytorch-pretrained-biggan is not installed")
needs_eyes = pytest.mark.skipif(not HAS_EYES_PACKAGE, reason="omniart-eye-generator is not installed")
needs_torchvision = pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision (ImageNet names) is missing")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="CUDA is not available")

SEASHORE, VOLCANO, VASE, PINEAPPLE = 978, 980, 883, 953


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


# ----- ImageNet keywords ---------------------------------------------------------------------------


@needs_torchvision
class TestImageNetKeywords:
    def test_names_are_the_1000_imagenet_classes(self):
        from cpia_cuda.generators.imagenet_classes import imagenet_class_names

        names = imagenet_class_names()
        assert len(names) == 1000
        assert (names[SEASHORE], names[VOLCANO], names[VASE], names[PINEAPPLE]) == (
            "seashore", "volcano", "vase", "pineapple")

    def test_paper_keywords(self):
        from cpia_cuda.generators.imagenet_classes import imagenet_class_index

        assert [imagenet_class_index(k) for k in ("seashore", "volcano", "vase", "pineapple")] == [
            SEASHORE, VOLCANO, VASE, PINEAPPLE]

    @pytest.mark.parametrize("keyword", ["SeaShore", " seashore ", "coast", "Sea-Coast", "sea_coast"])
    def test_case_spacing_and_synonyms(self, keyword):
        from cpia_cuda.generators.imagenet_classes import imagenet_class_index

        assert imagenet_class_index(keyword) == SEASHORE

    def test_whole_names_only(self):
        from cpia_cuda.generators.imagenet_classes import imagenet_class_index

        with pytest.raises(GeneratorError, match="not an ImageNet class"):
            imagenet_class_index("sea")  # a part of "seashore" is not a match

    def test_every_synonym_points_at_a_real_class(self):
        from cpia_cuda.generators.imagenet_classes import (
            IMAGENET_SYNONYMS, imagenet_class_index, imagenet_class_names,
        )

        names = imagenet_class_names()
        for synonym, target in IMAGENET_SYNONYMS.items():
            assert target in names, synonym
            assert names[imagenet_class_index(synonym)] == target

    def test_unknown_keyword_suggests_close_matches(self):
        from cpia_cuda.generators.imagenet_classes import imagenet_class_index

        with pytest.raises(GeneratorError, match="'seashore'"):
            imagenet_class_index("seashor")
        with pytest.raises(GeneratorError, match="must be a string"):
            imagenet_class_index(978)

    def test_ambiguous_name_needs_exact_spelling(self):
        from cpia_cuda.generators.imagenet_classes import imagenet_class_index, imagenet_class_names

        names = imagenet_class_names()
        assert names[imagenet_class_index("cardigan")] == "cardigan"
        assert names[imagenet_class_index("Cardigan")] == "Cardigan"
        with pytest.raises(GeneratorError, match="several ImageNet classes"):
            imagenet_class_index("CARDIGAN")


# ----- BigGAN ---------------------------------------------------------------------------------------

# Tiny BigGAN-deep: 4x4 stem of 64 channels, 6 blocks with attention before the fourth, 32x32 output.
TINY_CONFIG = dict(
    output_dim=32, z_dim=16, class_embed_dim=16, channel_width=4, num_classes=1000,
    layers=[(False, 16, 16), (True, 16, 8), (False, 8, 8), (True, 8, 4), (True, 4, 2), (False, 2, 1)],
    attention_layer_position=3, eps=1e-4, n_stats=51,
)
TINY_LAYERS = [  # (index, name, channels, size)
    (1, "block1", 64, 4), (2, "block2", 32, 8), (3, "block3", 32, 8), (4, "attention", 32, 8),
    (5, "block4", 16, 16), (6, "block5", 8, 32), (7, "block6", 4, 32),
]


def _random_biggan(code):
    """A package BigGAN with random weights, random batch-norm statistics and an active attention."""
    torch.manual_seed(0)
    model = code.BigGAN(code.BigGANConfig.from_dict(TINY_CONFIG))
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_means"):
                buffer.normal_(0.0, 0.2)
            elif name.endswith("running_vars"):
                buffer.uniform_(0.5, 1.5)
        for module in model.modules():
            if hasattr(module, "gamma"):
                module.gamma.fill_(0.7)  # zero at init, which would make attention the identity
        # the package leaves the output batch norm's affine parameters uninitialized (torch.Tensor(n))
        model.generator.bn.weight.uniform_(0.5, 1.5)
        model.generator.bn.bias.normal_(0.0, 0.2)
        # converged power-iteration vectors, as trained weights have (random ones give a tiny sigma and
        # weights that blow the activations up)
        for module in model.modules():
            if hasattr(module, "weight_orig"):
                left, _, right = torch.linalg.svd(module.weight_orig.flatten(1), full_matrices=False)
                module.weight_u.copy_(left[:, 0])
                module.weight_v.copy_(right[0])
    return model.eval()


@pytest.fixture(scope="module")
def biggan_code():
    if not HAS_BIGGAN_CODE:
        pytest.skip("pytorch-pretrained-biggan is not installed")
    from cpia_cuda.generators.biggan import biggan_model_module

    return biggan_model_module()


@pytest.fixture(scope="module")
def biggan_folder(tmp_path_factory, biggan_code):
    folder = tmp_path_factory.mktemp("biggan-tiny")
    model = _random_biggan(biggan_code)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(model.config.to_json_string())
    return folder


@pytest.fixture(scope="module")
def biggan(biggan_folder):
    from cpia_cuda.generators.biggan import load_biggan

    return load_biggan(biggan_folder)


@pytest.fixture(scope="module")
def reference_biggan(biggan_folder, biggan_code):
    """The package's own BigGAN on the same weights (spectral norm left as the package has it)."""
    model = biggan_code.BigGAN(biggan_code.BigGANConfig.from_json_file(str(biggan_folder / "config.json")))
    model.load_state_dict(torch.load(biggan_folder / "pytorch_model.bin", weights_only=True))
    return model.eval()


@needs_biggan
class TestBigGAN:
    def test_layer_table(self, biggan):
        table = [(l.index, l.name, l.channels) for l in biggan.layers()]
        assert table == [row[:3] for row in TINY_LAYERS]
        z = biggan.sample_inputs(2, seed=0)
        shapes = biggan.layer_shapes(z, biggan.make_context(class_index=SEASHORE))
        assert [shape for _, shape in shapes] == [(c, s, s) for _, _, c, s in TINY_LAYERS]
        assert biggan.name == "biggan" and biggan.input_kind == "latent"

    @pytest.mark.parametrize("truncation", [0.4, 1.0, 0.73])
    def test_forward_matches_package_model(self, biggan, reference_biggan, truncation):
        z = biggan.sample_inputs(3, seed=1, truncation=truncation)
        context = biggan.make_context(class_index=[SEASHORE, VOLCANO, VASE], truncation=truncation)
        image = biggan(z, context)
        with torch.no_grad():
            expected = (reference_biggan(z, context.class_vector, truncation) + 1) / 2
        assert image.shape == (3, 3, 32, 32)
        assert image.min() >= 0 and image.max() <= 1
        assert image.std() > 0.01
        assert_close(image, expected)

    def test_encode_decode_equals_forward_at_every_layer(self, biggan):
        z = biggan.sample_inputs(3, seed=2)
        context = biggan.make_context(class_index=PINEAPPLE, inputs=z)
        image = biggan(z, context)
        for layer in biggan.layers():
            activation = biggan.encode(z, layer.index, context)
            assert activation.shape[:2] == (3, layer.channels)
            assert_close(biggan.decode(activation, layer.index, context), image)
            assert_close(biggan.decode(activation, layer.name, context), image)

    def test_decode_renders_the_given_activation(self, biggan):
        z = biggan.sample_inputs(2, seed=3)
        context = biggan.make_context(class_index=PINEAPPLE, inputs=z)
        image = biggan(z, context)
        for layer in (1, 4, 6):
            activation = biggan.encode(z, layer, context)
            masked = activation * (torch.rand_like(activation) > 0.5)
            assert (biggan.decode(masked, layer, context) - image).abs().max() > 1e-3

    def test_decode_is_conditioned_on_class_noise_and_truncation(self, biggan):
        z = biggan.sample_inputs(2, seed=4)
        other_z = biggan.sample_inputs(2, seed=5)
        context = biggan.make_context(class_index=VASE, inputs=z)
        activation = biggan.encode(z, 4, context)
        image = biggan.decode(activation, 4, context)
        variants = [
            biggan.make_context(class_index=VOLCANO, inputs=z),
            biggan.make_context(class_index=VASE, inputs=other_z),
            biggan.make_context(class_index=VASE, inputs=z, truncation=0.9),
        ]
        for variant in variants:
            assert (biggan.decode(activation, 4, variant) - image).abs().max() > 1e-4

    def test_batch_rows_are_independent(self, biggan):
        z = biggan.sample_inputs(3, seed=6)
        context = biggan.make_context(class_index=[SEASHORE, VOLCANO, VASE])
        batch = biggan(z, context)
        for row, index in enumerate((SEASHORE, VOLCANO, VASE)):
            assert_close(batch[row:row + 1], biggan(z[row:row + 1], biggan.make_context(class_index=index)))

    def test_empty_batch(self, biggan):
        z = biggan.sample_inputs(0, seed=0)
        assert biggan(z, biggan.make_context(class_index=1)).shape == (0, 3, 32, 32)

    def test_sample_inputs(self, biggan):
        z = biggan.sample_inputs(64, seed=7, truncation=0.5)
        assert z.shape == (64, 16) and z.dtype == torch.float32
        assert torch.equal(z, biggan.sample_inputs(64, seed=7, truncation=0.5))
        assert not torch.equal(z, biggan.sample_inputs(64, seed=8, truncation=0.5))
        assert z.abs().max() <= 2 * 0.5 and z.std() > 0.2
        assert_close(biggan.sample_inputs(64, seed=7, truncation=1.0) * 0.5, z)
        with pytest.raises(GeneratorError, match="n must be"):
            biggan.sample_inputs(-1, seed=0)
        with pytest.raises(GeneratorError, match="seed must be"):
            biggan.sample_inputs(1, seed=0.5)

    @needs_torchvision
    def test_keyword_context(self, biggan):
        by_keyword = biggan.make_context(keyword="Seashore")
        by_index = biggan.make_context(class_index=SEASHORE)
        assert torch.equal(by_keyword.class_vector, by_index.class_vector)
        assert by_index.class_vector.shape == (1, 1000) and by_index.class_vector[0, SEASHORE] == 1
        several = biggan.make_context(keyword=["volcano", "vase"])
        assert several.class_vector.argmax(dim=1).tolist() == [VOLCANO, VASE]
        with pytest.raises(GeneratorError, match="close matches"):
            biggan.make_context(keyword="volcanoe")

    def test_class_vector_context(self, biggan):
        z = biggan.sample_inputs(2, seed=9)
        one_hot = torch.zeros(1000)
        one_hot[VASE] = 1
        assert_close(biggan(z, biggan.make_context(class_vector=one_hot)),
                     biggan(z, biggan.make_context(class_index=VASE)))
        blend = torch.zeros(2, 1000)
        blend[:, VASE] = blend[:, VOLCANO] = 0.5
        assert biggan(z, biggan.make_context(class_vector=blend)).shape == (2, 3, 32, 32)

    @pytest.mark.parametrize("condition, message", [
        (dict(), "exactly one of"),
        (dict(class_index=1, class_vector=torch.zeros(1000)), "exactly one of"),
        (dict(class_index=1000), r"class_index must be an integer in \[0, 1000\)"),
        (dict(class_index=True), "class_index must be an integer"),
        (dict(class_index=[]), "at least one class"),
        (dict(class_vector=torch.zeros(10)), r"class_vector must have shape \(1000,\)"),
        (dict(class_vector=torch.full((1000,), float("nan"))), "finite"),
        (dict(class_index=1, truncation=0.0), r"truncation must be a number in \(0, 1\]"),
        (dict(class_index=1, truncation=1.5), "truncation"),
        (dict(class_index=1, inputs=torch.zeros(2, 7)), r"inputs must be latent noise of shape \(N, 16\)"),
        (dict(class_index=[1, 2, 3], inputs=torch.zeros(2, 16)), "3 rows for a noise batch of 2"),
    ])
    def test_bad_context(self, biggan, condition, message):
        with pytest.raises(GeneratorError, match=message):
            biggan.make_context(**condition)

    def test_bad_calls(self, biggan):
        z = biggan.sample_inputs(2, seed=0)
        context = biggan.make_context(class_index=1, inputs=z)
        with pytest.raises(GeneratorError, match="needs a context"):
            biggan(z, None)
        with pytest.raises(GeneratorError, match=r"inputs must be latent noise of shape \(N, 16\), got"):
            biggan(torch.zeros(2, 3), context)
        with pytest.raises(GeneratorError, match="dtype"):
            biggan(z.double(), biggan.make_context(class_index=1))
        with pytest.raises(GeneratorError, match="differ from the noise"):
            biggan.encode(z + 1, 2, context)
        with pytest.raises(GeneratorError, match="inputs=z"):
            biggan.decode(biggan.encode(z, 2, context), 2, biggan.make_context(class_index=1))
        with pytest.raises(GeneratorError, match=r"must have shape \(2, 32, 8, 8\), got \(2, 32, 4, 4\)"):
            biggan.decode(torch.zeros(2, 32, 4, 4), 2, context)
        for layer in (0, 8, "block7", "gen_z"):
            with pytest.raises(GeneratorError, match="not an operable layer of biggan"):
                biggan.encode(z, layer, context)

    def test_official_layer_tables(self, biggan_code):
        """The official configs (built on the meta device): 512 has the paper's 15 layers, 14 blocks."""
        from cpia_cuda.generators.biggan import BigGANGenerator

        releases = importlib.import_module(biggan_code.__package__ + ".convert_tf_to_pytorch")
        counts = {}
        for config in (releases.BigGAN128, releases.BigGAN256, releases.BigGAN512):
            with torch.device("meta"):
                generator = BigGANGenerator(biggan_code.BigGAN(config))
            names = [layer.name for layer in generator.layers()]
            counts[config.output_dim] = (len(names), sum(name.startswith("block") for name in names))
            assert [layer.index for layer in generator.layers()] == list(range(1, len(names) + 1))
            assert names.count("attention") == 1
            if config.output_dim == 512:
                assert generator.resolve_layer(5).channels == 1024  # the paper's l = 5 (Figs. 6-7)
        assert counts == {128: (11, 10), 256: (13, 12), 512: (15, 14)}

    def test_wraps_only_package_models(self):
        from cpia_cuda.generators.biggan import BigGANGenerator

        with pytest.raises(GeneratorError, match="wraps a pytorch_pretrained_biggan BigGAN"):
            BigGANGenerator(torch.nn.Linear(2, 2))

    @needs_cuda
    def test_cuda_matches_cpu(self, biggan_folder, biggan):
        from cpia_cuda.generators.biggan import load_biggan

        on_cuda = load_biggan(biggan_folder, device="cuda")
        z = on_cuda.sample_inputs(2, seed=10)
        assert z.device.type == "cuda"
        context = on_cuda.make_context(class_index=[VASE, VOLCANO], inputs=z)
        image = on_cuda(z, context)
        for layer in on_cuda.layers():
            assert_close(on_cuda.decode(on_cuda.encode(z, layer.index, context), layer.index, context), image)
        expected = biggan(z.cpu(), biggan.make_context(class_index=[VASE, VOLCANO]))
        torch.testing.assert_close(image.cpu(), expected, rtol=1e-3, atol=1e-3)


@needs_biggan
class TestBigGANLoading:
    def test_missing_folder_says_what_to_get(self, tmp_path):
        from cpia_cuda.generators.biggan import load_biggan

        with pytest.raises(GeneratorError, match="does not exist") as error:
            load_biggan(tmp_path / "nowhere")
        for expected in ("config.json", "pytorch_model.bin", "biggan-deep-256", "biggan-deep-512"):
            assert expected in str(error.value)

    def test_loading_leaves_the_callers_random_stream_alone(self, biggan_folder):
        from cpia_cuda.generators.biggan import load_biggan

        random_state = torch.random.get_rng_state()
        load_biggan(biggan_folder)
        assert torch.equal(torch.random.get_rng_state(), random_state)  # its throw-away initial weights drew apart

    def test_a_float64_default_dtype_loads_and_samples_what_float32_does(self, biggan, biggan_folder):
        from cpia_cuda.generators import load_generator

        z = biggan.sample_inputs(2, seed=3)
        context = biggan.make_context(class_index=VOLCANO)
        with default_dtype(torch.float64):
            loaded = load_generator("biggan", weights=str(biggan_folder))
            z64 = loaded.sample_inputs(2, seed=3)
            context64 = loaded.make_context(class_index=VOLCANO)
        assert z64.dtype == torch.float32 and torch.equal(z64, z)
        assert torch.equal(context64.class_vector, context.class_vector)
        assert torch.equal(loaded.encode(z, 2, context), biggan.encode(z, 2, context))  # spectral norms folded alike
        assert torch.equal(loaded(z, context), biggan(z, context))

    @pytest.mark.parametrize("missing", ["config.json", "pytorch_model.bin"])
    def test_missing_file(self, biggan_folder, tmp_path, missing):
        from cpia_cuda.generators.biggan import load_biggan

        for name in ("config.json", "pytorch_model.bin"):
            if name != missing:
                (tmp_path / name).write_bytes((biggan_folder / name).read_bytes())
        with pytest.raises(GeneratorError, match=f"{missing}' is missing; expected a folder holding"):
            load_biggan(tmp_path)

    def _folder_with(self, tmp_path, biggan_folder, state=None, config=None):
        (tmp_path / "config.json").write_text(
            (biggan_folder / "config.json").read_text() if config is None else config)
        if state is None:
            (tmp_path / "pytorch_model.bin").write_bytes((biggan_folder / "pytorch_model.bin").read_bytes())
        else:
            torch.save(state, tmp_path / "pytorch_model.bin")
        return tmp_path

    def test_wrong_keys(self, biggan_folder, tmp_path):
        from cpia_cuda.generators.biggan import load_biggan

        state = torch.load(biggan_folder / "pytorch_model.bin", weights_only=True)
        state["generator.extra.weight"] = state.pop("embeddings.weight")
        with pytest.raises(GeneratorError, match=r"missing keys \['embeddings.weight'\].*generator.extra"):
            load_biggan(self._folder_with(tmp_path, biggan_folder, state=state))

    def test_wrong_shape(self, biggan_folder, tmp_path):
        from cpia_cuda.generators.biggan import load_biggan

        state = torch.load(biggan_folder / "pytorch_model.bin", weights_only=True)
        state["embeddings.weight"] = torch.zeros(3, 3)
        with pytest.raises(GeneratorError, match=r"embeddings.weight has shape \(3, 3\)"):
            load_biggan(self._folder_with(tmp_path, biggan_folder, state=state))

    def test_config_that_does_not_fit_the_weights(self, biggan_folder, tmp_path):
        from cpia_cuda.generators.biggan import load_biggan

        config = json.loads((biggan_folder / "config.json").read_text())
        config["channel_width"] = 8
        with pytest.raises(GeneratorError, match="has shape"):
            load_biggan(self._folder_with(tmp_path, biggan_folder, config=json.dumps(config)))

    @pytest.mark.parametrize("edit, message", [
        (dict(channel_width=-4), "channel_width must be an int >= 1, got -4"),
        (dict(n_stats=1), "n_stats = 1 does not fit"),  # a division by zero in the package
        (dict(n_stats=50), "n_stats = 50 does not fit the package's truncation lookup"),  # index 50 of 50 at t = 1
        (dict(layers=None), r"missing keys \['layers'\]"),
        (dict(layers=[[False, 16]]), r"layers must be a non-empty list of \[upsample"),
        (dict(attention_layer_position=9), "attention_layer_position must be at most the number of layers, 6"),
        (dict(eps=0), "eps must be a positive number, got 0"),
    ])
    def test_config_values_are_checked_before_building(self, biggan_folder, tmp_path, edit, message):
        from cpia_cuda.generators.biggan import load_biggan

        config = json.loads((biggan_folder / "config.json").read_text())
        config.update(edit)
        config = {key: value for key, value in config.items() if value is not None}
        with pytest.raises(GeneratorError, match=f"is not a usable BigGAN config: ({message})"):
            load_biggan(self._folder_with(tmp_path, biggan_folder, config=json.dumps(config)))

    def test_a_file_given_as_the_folder_and_no_weights_at_all_say_what_to_get(self, biggan_folder):
        from cpia_cuda.generators import load_generator
        from cpia_cuda.generators.biggan import load_biggan

        with pytest.raises(GeneratorError, match="config.json' is a file, not a folder; expected a folder holding"):
            load_biggan(biggan_folder / "config.json")
        with pytest.raises(GeneratorError, match="generator 'biggan' needs weights .*--weights on the command "
                                                 "line.*: expected a folder holding config.json and "
                                                 "pytorch_model.bin.*biggan-deep-256"):
            load_generator("biggan")

    def test_unreadable_files(self, biggan_folder, tmp_path):
        from cpia_cuda.generators.biggan import load_biggan

        folder = self._folder_with(tmp_path, biggan_folder, config="{not json")
        with pytest.raises(GeneratorError, match="config.json' is not a readable JSON file"):
            load_biggan(folder)
        folder = self._folder_with(tmp_path, biggan_folder)
        (folder / "pytorch_model.bin").write_bytes(b"not a torch file")
        with pytest.raises(GeneratorError, match=r"not a readable PyTorch state dict: not a file torch.save wrote "
                                                 r"\(it starts with b'not ', neither a zip archive nor a pickle\)"):
            load_biggan(folder)
        (folder / "pytorch_model.bin").write_bytes(b"")
        with pytest.raises(GeneratorError, match="not a readable PyTorch state dict: the file is empty"):
            load_biggan(folder)
        with zipfile.ZipFile(folder / "pytorch_model.bin", "w") as archive:
            archive.writestr("notes.txt", "hello")
        with pytest.raises(GeneratorError, match="a zip archive, but not one torch.save wrote"):
            load_biggan(folder)
        folder = self._folder_with(tmp_path, biggan_folder, state=[torch.zeros(1)])
        with pytest.raises(GeneratorError, match="must hold a state dict, got list"):
            load_biggan(folder)


# ----- eye DCGAN ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eyes():
    if not HAS_EYES_PACKAGE:
        pytest.skip("omniart-eye-generator is not installed")
    from cpia_cuda.generators.dcgan_eyes import load_eyes_dcgan

    return load_eyes_dcgan()


def _package_file(name):
    from cpia_cuda.generators.dcgan_eyes import package_weights_path

    return package_weights_path().parent / name


@needs_eyes
class TestEyesDCGAN:
    def test_layer_table(self, eyes):
        assert [(l.index, l.name, l.channels) for l in eyes.layers()] == [
            (1, "block1", 1024), (2, "block2", 512), (3, "block3", 256), (4, "block4", 128),
            (5, "block5", 64)]
        z = eyes.sample_inputs(1, seed=0)
        shapes = [shape for _, shape in eyes.layer_shapes(z, eyes.make_context(keyword="blue"))]
        assert shapes == [(1024, 4, 4), (512, 8, 8), (256, 16, 16), (128, 32, 32), (64, 64, 64)]
        assert eyes.name == "eyes" and eyes.input_kind == "latent"

    def test_a_float64_default_dtype_samples_what_float32_does(self, eyes):
        z = eyes.sample_inputs(2, seed=4)
        with default_dtype(torch.float64):
            z64 = eyes.sample_inputs(2, seed=4)
        assert z64.dtype == torch.float32 and torch.equal(z64, z)

    def test_real_weights_make_images(self, eyes):
        z = eyes.sample_inputs(2, seed=1)
        image = eyes(z, eyes.make_context(keyword="hazel"))
        assert image.shape == (2, 3, 128, 128) and image.dtype == torch.float32
        assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
        assert image.std() > 0.05

    def test_matches_package_generator(self, eyes):
        """The package's own Generator class (generator.py, loaded by path: importing the package would
        load its weights onto CUDA) on the same weights and noise."""
        spec = importlib.util.spec_from_file_location("_omniart_eye_reference", _package_file("generator.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        reference = module.Generator()
        reference.load_state_dict(torch.load(_package_file("generator_model_state.pth"), map_location="cpu",
                                             weights_only=True))
        reference.eval()
        z = eyes.sample_inputs(3, seed=2)
        context = eyes.make_context(keyword=["amber", "green", "red"])
        with torch.no_grad():
            expected = (reference(z[:, :, None, None], context.label) + 1) / 2
        assert_close(eyes(z, context), expected)

    def test_colour_names_are_the_package_classes(self):
        from cpia_cuda.generators.dcgan_eyes import EYE_COLOURS

        tree = ast.parse(_package_file("eye_generator.py").read_text())
        assigned = [node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    and any(getattr(target, "id", None) == "classes" for target in node.targets)]
        assert len(assigned) == 1 and ast.literal_eval(assigned[0]) == EYE_COLOURS

    def test_encode_decode_equals_forward_at_every_layer(self, eyes):
        z = eyes.sample_inputs(2, seed=3)
        context = eyes.make_context(keyword="blue")
        image = eyes(z, context)
        for layer in eyes.layers():
            activation = eyes.encode(z, layer.index, context)
            assert activation.shape[:2] == (2, layer.channels)
            assert_close(eyes.decode(activation, layer.name, context), image)
            assert_close(eyes.decode(activation, layer.index), image)
            masked = activation * (torch.rand_like(activation) > 0.5)
            assert (eyes.decode(masked, layer.index) - image).abs().max() > 1e-3

    def test_colour_and_noise_change_the_image(self, eyes):
        z = eyes.sample_inputs(1, seed=4)
        blue = eyes(z, eyes.make_context(keyword="blue"))
        assert (eyes(z, eyes.make_context(keyword="brown")) - blue).abs().max() > 1e-2
        other_noise = eyes(eyes.sample_inputs(1, seed=5), eyes.make_context(keyword="blue"))
        assert (other_noise - blue).abs().max() > 1e-2

    def test_keywords(self, eyes):
        from cpia_cuda.generators.dcgan_eyes import EYE_COLOURS, eye_colour_index

        assert [eye_colour_index(c) for c in EYE_COLOURS] == list(range(8))
        assert eye_colour_index(" Blue ") == EYE_COLOURS.index("blue")
        assert eye_colour_index("grey") == EYE_COLOURS.index("gray")
        greyscale = eyes.make_context(keyword="greyscale").label
        assert torch.equal(greyscale, eyes.make_context(class_index=4).label)
        with pytest.raises(GeneratorError, match="not an eye colour; expected one of amber, blue"):
            eye_colour_index("purple")
        with pytest.raises(GeneratorError, match="close matches: 'hazel'"):
            eye_colour_index("hazle")

    def test_stays_in_eval_mode(self, eyes):
        z = eyes.sample_inputs(2, seed=6)
        context = eyes.make_context(class_index=[0, 7])
        before = eyes(z, context)
        eyes.train()
        assert not eyes.training and not any(module.training for module in eyes.modules())
        assert_close(eyes(z, context), before)

    def test_sample_inputs(self, eyes):
        z = eyes.sample_inputs(5, seed=11)
        assert z.shape == (5, 100) and torch.equal(z, eyes.sample_inputs(5, seed=11))
        assert not torch.equal(z, eyes.sample_inputs(5, seed=12))

    def test_bad_calls(self, eyes):
        z = eyes.sample_inputs(2, seed=0)
        context = eyes.make_context(class_index=1, inputs=z)
        with pytest.raises(GeneratorError, match="exactly one of"):
            eyes.make_context()
        with pytest.raises(GeneratorError, match=r"class_index must be an integer in \[0, 8\)"):
            eyes.make_context(class_index=8)
        with pytest.raises(GeneratorError, match="needs a context"):
            eyes(z, None)
        with pytest.raises(GeneratorError, match=r"inputs must be noise of shape \(N, 100\)"):
            eyes(torch.zeros(2, 100, 1, 1), context)
        with pytest.raises(GeneratorError, match="differ from the noise"):
            eyes(z * 2, context)
        with pytest.raises(GeneratorError, match="3 rows for a noise batch of 2"):
            eyes(z, eyes.make_context(class_index=[1, 2, 3]))
        with pytest.raises(GeneratorError, match=r"must have shape \(N, 512, 8, 8\), got \(2, 512, 4, 4\)"):
            eyes.decode(torch.zeros(2, 512, 4, 4), 2)
        with pytest.raises(GeneratorError, match="not an operable layer of eyes"):
            eyes.encode(z, 6, context)

    def test_loading_errors(self, tmp_path):
        from cpia_cuda.generators.dcgan_eyes import load_eyes_dcgan

        with pytest.raises(GeneratorError, match="not found"):
            load_eyes_dcgan(tmp_path / "missing.pth")
        state = torch.load(_package_file("generator_model_state.pth"), map_location="cpu", weights_only=True)
        state.pop("main.16.weight")
        torch.save(state, tmp_path / "partial.pth")
        with pytest.raises(GeneratorError, match=r"missing keys \['to_rgb.weight'\]"):
            load_eyes_dcgan(tmp_path / "partial.pth")
        torch.save({"main.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
        with pytest.raises(GeneratorError, match="does not fit the model"):
            load_eyes_dcgan(tmp_path / "other.pth")
        (tmp_path / "junk.pth").write_bytes(b"junk")
        with pytest.raises(GeneratorError, match="not a readable PyTorch state dict"):
            load_eyes_dcgan(tmp_path / "junk.pth")

    @needs_cuda
    def test_cuda_matches_cpu(self, eyes):
        from cpia_cuda.generators.dcgan_eyes import load_eyes_dcgan

        on_cuda = load_eyes_dcgan(device="cuda")
        z = on_cuda.sample_inputs(2, seed=13)
        context = on_cuda.make_context(keyword=["red", "gray"], inputs=z)
        image = on_cuda(z, context)
        for layer in on_cuda.layers():
            assert_close(on_cuda.decode(on_cuda.encode(z, layer.index, context), layer.index, context), image)
        torch.testing.assert_close(image.cpu(), eyes(z.cpu(), eyes.make_context(keyword=["red", "gray"])),
                                   rtol=1e-3, atol=1e-3)


def test_gan_arguments_of_other_python_types(eyes):
    """numpy and tensor scalars are taken for what they mean; bytes and out-of-range seeds are refused."""
    assert torch.equal(eyes.sample_inputs(1, np.int64(3)), eyes.sample_inputs(1, 3))
    inputs = eyes.sample_inputs(1, 0)
    from_tensor = eyes.make_context(class_index=torch.tensor(5), inputs=inputs)
    assert torch.equal(from_tensor.label, eyes.make_context(class_index=5, inputs=inputs).label)
    with pytest.raises(GeneratorError, match="keyword must be a string or a sequence of strings, got bytes"):
        eyes.make_context(keyword=b"blue", inputs=inputs)
    for seed in (-1, 2**63):
        with pytest.raises(GeneratorError, match=r"seed must be an int in \[0, 2\^63 - 1\]"):
            eyes.sample_inputs(1, seed)


def test_registry_generators_are_frozen_and_in_eval_mode(eyes):
    """Loaded by name, a generator is for inference: no autograd graph is built through it."""
    from cpia_cuda.generators import load_generator

    generator = load_generator("eyes")
    assert not generator.training and not any(p.requires_grad for p in generator.parameters())
    inputs = generator.sample_inputs(1, 0)
    assert not generator(inputs, generator.make_context(keyword="blue", inputs=inputs)).requires_grad

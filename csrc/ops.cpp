// Schemas of the cpia ops, declared once. Backends register themselves in csrc/cpu and csrc/cuda;
// the fake (meta) implementations live in cpia_cuda/_ops.py.

#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing cpia_cuda._C loads this library and so runs the registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(cpia, m) {
  m.set_python_module("cpia_cuda._ops");
  m.def("channel_flush(Tensor Y, Tensor allowed, int tau) -> Tensor");
  m.def(
      "channel_stroke(Tensor Y, Tensor allowed, Tensor? init_mask, Tensor brush, Tensor distance_weights, int tau, "
      "float m, int p, float min_response, int? max_strokes, float? max_coverage) "
      "-> (Tensor order, Tensor strokes, Tensor stroke_counts, Tensor stop_reasons, Tensor channel_counts)");
}

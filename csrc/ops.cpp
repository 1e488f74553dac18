// Schemas of the cpia ops, declared once. Backends register themselves in csrc/cpu and csrc/cuda;
// the fake (meta) implementations live in cpia_cuda/_ops.py.

#include <Python.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

namespace {

// Whether at::parallel_for in these kernels can use more than one thread: only code compiled with
// OpenMP gets ATen's intra-op parallelism, otherwise every parallel_for silently runs on one thread.
PyObject* intra_op_parallel(PyObject*, PyObject*) {
#ifdef INTRA_OP_PARALLEL
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyMethodDef module_methods[] = {
    {"intra_op_parallel", intra_op_parallel, METH_NOARGS, "True if the CPU kernels were built with intra-op threads."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

extern "C" {
// Importing cpia_cuda._C loads this library and so runs the registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, module_methods};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(cpia, m) {
  m.set_python_module("cpia_cuda._ops");
  m.def("channel_flush(Tensor Y, Tensor allowed, int tau) -> Tensor");
  m.def(
      "channel_stroke(Tensor Y, Tensor allowed, Tensor? init_mask, Tensor brush, Tensor distance_weights, int tau, "
      "float m, int p, float? min_response, int? max_strokes, float? max_coverage) "
      "-> (Tensor order, Tensor strokes, Tensor stroke_counts, Tensor stop_reasons, Tensor channel_counts)");
}

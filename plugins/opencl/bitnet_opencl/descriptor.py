"""The ``opencl`` entry point. Imports only bitnet.hal; pyopencl is imported in probe/create."""

from __future__ import annotations

from importlib import resources

from bitnet.hal import (
    BackendDescriptor,
    CreateOptions,
    DeviceInfo,
    DeviceKind,
    KernelBackend,
    Unavailable,
)
from bitnet.hal.fingerprint import files_digest, kernel_files

NO_PLATFORM_REMEDY = (
    "pip install pocl-binary-distribution (runs on the CPU), or install your GPU vendor's "
    "OpenCL driver"
)


class OpenCLDescriptor(BackendDescriptor):
    name = "opencl"
    version = "0.1.0"
    api_version = (3, 3)
    kind = DeviceKind.DGPU
    priority = 30
    distribution = "bitnet-opencl"

    def probe(self) -> list[DeviceInfo] | Unavailable:
        try:
            import pyopencl as cl
        except ImportError as exc:
            return Unavailable(f"pyopencl cannot be imported ({exc})", "pip install pyopencl")
        try:
            from bitnet_opencl.devices import opencl_devices

            found = opencl_devices(cl)
        except cl.Error as exc:
            # clGetPlatformIDs fails with PLATFORM_NOT_FOUND_KHR when no ICD is installed.
            return Unavailable(f"no OpenCL platform ({exc})", NO_PLATFORM_REMEDY)
        if not found:
            return Unavailable("OpenCL platforms found but no devices", NO_PLATFORM_REMEDY)
        return [info for info, _ in found]

    def create(self, device: DeviceInfo, options: CreateOptions) -> KernelBackend:
        import pyopencl as cl

        from bitnet.hal.gpu_backend import GpuBackend
        from bitnet_opencl.devices import opencl_devices
        from bitnet_opencl.runtime import OpenCLRuntime

        for info, cl_device in opencl_devices(cl):
            if info.index == device.index and info.name == device.name:
                runtime = OpenCLRuntime(cl_device)
                return GpuBackend(self.name, info, runtime, notes=runtime.notes())
        raise ValueError(f"OpenCL device {device.spec} ({device.name}) is no longer present")

    def fingerprint(self) -> str:
        kernels = kernel_files(resources.files("bitnet_opencl") / "kernels", (".cl",))
        return f"{self.version}+{files_digest(kernels, salt=self.version.encode())[:16]}"


descriptor = OpenCLDescriptor()

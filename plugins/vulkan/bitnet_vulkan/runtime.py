"""VulkanRuntime: bitnet.hal's DeviceRuntime over the `vulkan` binding: device, buffers,
pipelines, and a recorder that batches dispatches into one command buffer until results are
needed (a decode step is then one submission: ids in, logits out).

Kernels are the shipped SPIR-V of ``shaders/`` (built by scripts/build_shaders.py), bound as
storage buffers in the order of bitnet.hal.device_runtime.KERNELS, with the kernel's scalars as
push constants.

Pitfalls of the `vulkan` binding: every nested create-info struct is kept in a local variable
until its call returns; sizes are real byte counts (VK_WHOLE_SIZE is -1 in the binding).
"""

from __future__ import annotations

import struct
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterator

import numpy as np
import vulkan as vk

from bitnet.hal.device_runtime import ITEMS, KernelSpec, Limits
from bitnet_vulkan.devices import VulkanDevice

ffi = vk.ffi
_MIN_BLOCK = 256  # pooled buffers are powers of two from here
_STAGING_CHUNK = 64 << 20  # host <-> device copies go through a staging buffer of this size
_SETS_PER_BATCH = 512  # descriptor sets one batch may hold before it is flushed
_SETS_PER_RECORDING = 8192  # descriptor sets a recording may hold (a decode step's dispatches)
_INLINE_WRITE = 65536  # writes up to this many bytes go inline in the command buffer
_MAX_BINDINGS = 9
_COMPUTE = vk.VK_SHADER_STAGE_COMPUTE_BIT
MAX_HEAD_DIM = 512  # attention.comp's MAX_HEAD_DIM
FLOAT_FORMAT_IDS = {"f32": 0, "f16": 1, "bf16": 2, "q8_0": 3}  # float_decode.glsl's FMT
ELEMENTWISE_OPS = {"add": 0, "relu2_mul": 1, "silu_mul": 2}  # elementwise.comp's OP
# KERNELS names whose shader has another name (fp64 and integer-dot variants are chosen apart)
SHADER_NAMES = {"embed_q6_k": "embed_q6k", "quantize_per_token_i8": "quantize_i8",
                "quantize_q8_k": "quantize_q8k", "linear_q6_k": "linear_q6k",
                "add": "elementwise", "relu2_mul": "elementwise", "silu_mul": "elementwise"}
# *_f64 where the device has shaderFloat64; *_idot with OpSDot; *_f64_idot both
# (scripts/build_shaders.py's FP64_SOURCES and INT_DOT_SOURCES)
FP64_SHADERS = ("rmsnorm", "rope", "rmsnorm_quantize_i8", "rmsnorm_quantize_q8_k",
                "norm_qkv_i2s", "norm_qkv_tq", "norm_gate_up_i2s", "norm_gate_up_tq",
                "rope_attention")
INT_DOT_SHADERS = ("linear_i2s", "linear_tq", "linear_q6k", "norm_qkv_i2s", "norm_qkv_tq",
                   "norm_gate_up_i2s", "norm_gate_up_tq", "linear_add_i2s", "linear_add_tq")
FUSED_MAX_WIDTH = 4096  # shaders/fused.glsl's FUSED_MAX_K: the widest prologue row
FUSED_SHARED_MEMORY = 32 * 1024  # the fused matmuls' shared memory, at most (d = 4096)


@dataclass(frozen=True)
class ShaderSpec:
    """A shader's interface: storage-buffer bindings 0..n-1 and its push-constant layout."""

    bindings: int
    push_format: str  # struct format of the push constants, e.g. "<iiiff"


SHADERS = {
    "quantize_i8": ShaderSpec(3, "<i"),
    "quantize_q8k": ShaderSpec(3, "<i"),
    "linear_i2s": ShaderSpec(4, "<iiiff"),
    "linear_tq": ShaderSpec(5, "<iiif"),
    "linear_i2s_idot": ShaderSpec(4, "<iiiff"),
    "linear_tq_idot": ShaderSpec(5, "<iiif"),
    "linear_q6k": ShaderSpec(6, "<iiif"),
    "linear_q6k_idot": ShaderSpec(6, "<iiif"),
    "linear_float": ShaderSpec(3, "<iiiif"),
    "embed": ShaderSpec(3, "<ii"),
    "embed_q6k": ShaderSpec(5, "<i"),
    "rmsnorm": ShaderSpec(3, "<if"),
    "rmsnorm_f64": ShaderSpec(3, "<if"),
    "rope": ShaderSpec(5, "<ii"),
    "rope_f64": ShaderSpec(5, "<ii"),
    "kv_store": ShaderSpec(6, "<iiiii"),
    "attention": ShaderSpec(7, "<iiiiifiii"),
    "attention_combine": ShaderSpec(3, "<iii"),
    "elementwise": ShaderSpec(3, "<i"),
    # decode_layer's fused kernels (bitnet.hal.device_runtime.FUSED_KERNELS)
    "rmsnorm_quantize_i8": ShaderSpec(4, "<if"),
    "rmsnorm_quantize_q8_k": ShaderSpec(4, "<if"),
    "norm_qkv_i2s": ShaderSpec(6, "<iiiifffffff"),
    "norm_qkv_tq": ShaderSpec(9, "<iiiiffff"),
    "norm_gate_up_i2s": ShaderSpec(5, "<iiifffff"),
    "norm_gate_up_tq": ShaderSpec(7, "<iiifff"),
    "linear_add_i2s": ShaderSpec(5, "<iiff"),
    "linear_add_tq": ShaderSpec(6, "<iif"),
    "rope_attention": ShaderSpec(9, "<iiiiifii"),
}
for _name in FP64_SHADERS:  # the variants bind and push as their source does
    SHADERS.setdefault(f"{_name}_f64", SHADERS[_name])
for _name in INT_DOT_SHADERS:
    SHADERS.setdefault(f"{_name}_idot", SHADERS[_name])
    if _name in FP64_SHADERS:
        SHADERS[f"{_name}_f64_idot"] = SHADERS[_name]


def find_memory_type(memory: Any, type_bits: int, wanted: int, fallback: int | None) -> int:
    """Index of the first memory type allowed by type_bits that has the `wanted` flags (else the
    `fallback` flags); the device's own list is searched, never an assumed index."""
    for flags in (wanted, fallback):
        if flags is None:
            continue
        for i in range(memory.memoryTypeCount):
            if type_bits & (1 << i) and (memory.memoryTypes[i].propertyFlags & flags) == flags:
                return i
    raise RuntimeError(f"no Vulkan memory type with flags {wanted:#x} in bits {type_bits:#x}")


class Block:
    """One VkBuffer with its own memory."""

    def __init__(self, device: Any, memory_props: Any, size: int, host_visible: bool) -> None:
        self.device = device
        self.size = size
        usage = (vk.VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | vk.VK_BUFFER_USAGE_TRANSFER_SRC_BIT
                 | vk.VK_BUFFER_USAGE_TRANSFER_DST_BIT)
        info = vk.VkBufferCreateInfo(size=size, usage=usage,
                                     sharingMode=vk.VK_SHARING_MODE_EXCLUSIVE)
        self.buffer = vk.vkCreateBuffer(device, info, None)
        reqs = vk.vkGetBufferMemoryRequirements(device, self.buffer)
        if host_visible:
            coherent = (vk.VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT
                        | vk.VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)
            index = find_memory_type(memory_props, reqs.memoryTypeBits, coherent, None)
        else:
            index = find_memory_type(memory_props, reqs.memoryTypeBits,
                                     vk.VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0)
        alloc = vk.VkMemoryAllocateInfo(allocationSize=reqs.size, memoryTypeIndex=index)
        self.memory = vk.vkAllocateMemory(device, alloc, None)
        vk.vkBindBufferMemory(device, self.buffer, self.memory, 0)
        self.mapped = vk.vkMapMemory(device, self.memory, 0, size, 0) if host_visible else None

    def destroy(self) -> None:
        if self.mapped is not None:
            vk.vkUnmapMemory(self.device, self.memory)
            self.mapped = None
        vk.vkDestroyBuffer(self.device, self.buffer, None)
        vk.vkFreeMemory(self.device, self.memory, None)


@dataclass
class Pipeline:
    layout: Any
    set_layout: Any
    pipeline: Any
    module: Any
    spec: ShaderSpec
    grid: str  # how dispatches count it (bitnet.hal.device_runtime)


class VulkanRuntime:
    """One logical device with one compute queue."""

    name = "vulkan"

    def __init__(self, instance: Any, device: VulkanDevice) -> None:
        physical = device.physical
        use_fp64 = device.fp64
        int_dot = device.int_dot
        self.instance = instance
        self.vk_device = device
        self.max_buffer_range = device.max_buffer_range
        self.int_dot = int_dot
        self.physical = physical
        self.work_group = device.work_group
        self.use_fp64 = use_fp64
        self.submissions = 0
        self.fingerprint = f"{device.info.name}|{device.info.driver_version}"
        self.limits = Limits(simd_width=device.subgroup_size,
                             max_work_group=device.max_invocations, max_rows=device.max_rows,
                             shared_memory=device.shared_memory,
                             max_buffer=device.max_buffer_range, fp64=use_fp64,
                             max_head_dim=MAX_HEAD_DIM)
        # GpuBackend.decode_layer's fused shaders, where shared memory holds their prologue
        self.fused_max_width = (FUSED_MAX_WIDTH if device.shared_memory >= FUSED_SHARED_MEMORY
                                else 0)
        self.memory_props = vk.vkGetPhysicalDeviceMemoryProperties(physical)
        limits = vk.vkGetPhysicalDeviceProperties(physical).limits
        self.max_groups = int(limits.maxComputeWorkGroupCount[0])
        self.family = _compute_family(physical)
        priorities = ffi.new("float[]", [1.0])
        queue_info = vk.VkDeviceQueueCreateInfo(queueFamilyIndex=self.family, queueCount=1,
                                                pQueuePriorities=priorities)
        features = vk.VkPhysicalDeviceFeatures(shaderFloat64=vk.VK_TRUE if use_fp64 else 0)
        extensions = []
        dot_features = None
        if int_dot:  # the *_idot shaders use OpSDot: enable the extension and its feature
            extensions = ["VK_KHR_shader_integer_dot_product"]
            dot_features = vk.VkPhysicalDeviceShaderIntegerDotProductFeatures(
                sType=vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES,
                shaderIntegerDotProduct=vk.VK_TRUE,
            )
        device_info = vk.VkDeviceCreateInfo(queueCreateInfoCount=1, pQueueCreateInfos=[queue_info],
                                            pEnabledFeatures=features, pNext=dot_features,
                                            enabledExtensionCount=len(extensions),
                                            ppEnabledExtensionNames=extensions)
        self.device = vk.vkCreateDevice(physical, device_info, None)
        self.queue = vk.vkGetDeviceQueue(self.device, self.family, 0)
        pool_info = vk.VkCommandPoolCreateInfo(
            flags=vk.VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT, queueFamilyIndex=self.family
        )
        self.command_pool = vk.vkCreateCommandPool(self.device, pool_info, None)
        alloc_info = vk.VkCommandBufferAllocateInfo(commandPool=self.command_pool,
                                                    level=vk.VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                                    commandBufferCount=2)
        cmds = vk.vkAllocateCommandBuffers(self.device, alloc_info)
        self.fence = vk.vkCreateFence(self.device, vk.VkFenceCreateInfo(), None)
        sizes = vk.VkDescriptorPoolSize(type=vk.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                        descriptorCount=_SETS_PER_BATCH * _MAX_BINDINGS)
        desc_info = vk.VkDescriptorPoolCreateInfo(maxSets=_SETS_PER_BATCH, poolSizeCount=1,
                                                  pPoolSizes=[sizes])
        # two batches: the one before a replay waits in _queued while the next one records
        self._slots = [(cmds[i], vk.vkCreateDescriptorPool(self.device, desc_info, None))
                       for i in range(2)]
        self._slot = 0
        self.cmd, self.descriptor_pool = self._slots[0]
        self._queued: list[Any] = []  # ended command buffers, submitted together by flush
        self._held: list[int] = []  # the batch slots among them
        self.staging = Block(self.device, self.memory_props, _STAGING_CHUNK, host_visible=True)
        self._owned: list[Block] = []
        self._pipelines: dict[tuple[str, int, int, int, int], Pipeline] = {}
        self._recording = False
        self._sets_in_batch = 0
        self._capture: VulkanRecording | None = None  # the recording being captured, if any
        self._recordings: list[VulkanRecording] = []

    # -- buffers -----------------------------------------------------------------------------

    def allocate(self, nbytes: int) -> Block:
        """A device buffer of nbytes (rounded up to words), freed by free or at close."""
        if nbytes > self.max_buffer_range:
            raise MemoryError(f"a {nbytes}-byte buffer exceeds this Vulkan device's "
                              f"maxStorageBufferRange ({self.max_buffer_range} bytes)")
        block = Block(self.device, self.memory_props, max(4, (nbytes + 3) // 4 * 4),
                      host_visible=False)
        self._owned.append(block)
        return block

    def free(self, block: Block) -> None:
        self.flush()
        self._owned.remove(block)
        block.destroy()

    def copy_in(self, block: Block, host: np.ndarray, offset: int = 0) -> None:
        self.write(block, host, offset)

    def copy_out(self, block: Block, nbytes: int, offset: int = 0) -> np.ndarray:
        return self.read(block, nbytes, offset)

    def write(self, block: Block, data: np.ndarray, offset: int = 0) -> None:
        """Copy host bytes into a device buffer, ordered after queued work. Small writes (token
        ids, a step's values) go inline in the batch (vkCmdUpdateBuffer: no submission of their
        own); larger ones flush and go through the staging buffer."""
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if raw.size <= _INLINE_WRITE and raw.size % 4 == 0 and offset % 4 == 0:
            if self._sets_in_batch >= _SETS_PER_BATCH:
                self.flush()
            self._begin()
            vk.vkCmdUpdateBuffer(self.cmd, block.buffer, offset, raw.size,
                                 ffi.from_buffer(raw.tobytes()))
            self._barrier()
            return
        if self._capture is not None:
            raise RecordingError("a large host write cannot be recorded")
        self.flush()
        for start in range(0, raw.size, _STAGING_CHUNK):
            chunk = raw[start:start + _STAGING_CHUNK]
            self.staging.mapped[0:chunk.size] = chunk.tobytes()
            self._begin()
            region = vk.VkBufferCopy(srcOffset=0, dstOffset=offset + start, size=chunk.size)
            vk.vkCmdCopyBuffer(self.cmd, self.staging.buffer, block.buffer, 1, [region])
            self._barrier()
            self.flush()

    def read(self, block: Block, nbytes: int, offset: int = 0) -> np.ndarray:
        """Device bytes -> a new host uint8 array (runs everything queued before it)."""
        if self._capture is not None:
            raise RecordingError("a read waits for the device: it cannot be recorded")
        out = np.empty(nbytes, dtype=np.uint8)
        for start in range(0, nbytes, _STAGING_CHUNK):
            size = min(_STAGING_CHUNK, nbytes - start)
            self._begin()
            region = vk.VkBufferCopy(srcOffset=offset + start, dstOffset=0, size=size)
            vk.vkCmdCopyBuffer(self.cmd, block.buffer, self.staging.buffer, 1, [region])
            host = vk.VkMemoryBarrier(srcAccessMask=vk.VK_ACCESS_TRANSFER_WRITE_BIT,
                                      dstAccessMask=vk.VK_ACCESS_HOST_READ_BIT)
            vk.vkCmdPipelineBarrier(self.cmd, vk.VK_PIPELINE_STAGE_TRANSFER_BIT,
                                    vk.VK_PIPELINE_STAGE_HOST_BIT, 0, 1, [host], 0, None, 0, None)
            self.flush()
            out[start:start + size] = np.frombuffer(self.staging.mapped[0:size], dtype=np.uint8)
        return out

    def copy(self, src: Block, src_offset: int, dst: Block, dst_offset: int, nbytes: int) -> None:
        self._begin()
        region = vk.VkBufferCopy(srcOffset=src_offset, dstOffset=dst_offset, size=nbytes)
        vk.vkCmdCopyBuffer(self.cmd, src.buffer, dst.buffer, 1, [region])
        self._barrier()

    # -- pipelines and dispatch ----------------------------------------------------------------

    def kernel(self, spec: KernelSpec) -> Pipeline:
        """The pipeline for a KERNELS spec: its shader (fp64 / integer-dot variant where the
        device has them) and specialization constants."""
        name = SHADER_NAMES.get(spec.name, spec.name)
        if name in FP64_SHADERS and self.use_fp64:
            name += "_f64"
        if name in INT_DOT_SHADERS and self.int_dot:
            name += "_idot"
        constant = ELEMENTWISE_OPS.get(spec.name, FLOAT_FORMAT_IDS.get(spec.fmt, 0))
        lanes = spec.lanes or None
        return self.pipeline(name, constant, lanes, spec.rows or 1, spec.blocks or 1,
                             spec.sig.grid)

    def pipeline(self, name: str, constant: int = 0, lanes: int | None = None, rows: int = 1,
                 blocks: int = 1, grid: str = ITEMS) -> Pipeline:
        """The compute pipeline of shaders/<name>.spv, specialized: constant 0 = WG_SIZE (the
        runtime's work-group, or `lanes` for matmuls), 1 = FMT or OP, 2 = ROWS (matmul rows per
        work-group), 3 = BLOCKS (linear_tq's and linear_q6k's K / 256). Unused constants are
        ignored."""
        width = self.work_group if lanes is None else lanes
        key = (name, constant, width, rows, blocks)
        if key in self._pipelines:
            return self._pipelines[key]
        spec = SHADERS[name]
        code = (resources.files("bitnet_vulkan") / "shaders" / f"{name}.spv").read_bytes()
        module_info = vk.VkShaderModuleCreateInfo(codeSize=len(code), pCode=code)
        module = vk.vkCreateShaderModule(self.device, module_info, None)
        bindings = [
            vk.VkDescriptorSetLayoutBinding(binding=i,
                                            descriptorType=vk.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                            descriptorCount=1, stageFlags=_COMPUTE)
            for i in range(spec.bindings)
        ]
        set_info = vk.VkDescriptorSetLayoutCreateInfo(bindingCount=len(bindings),
                                                      pBindings=bindings)
        set_layout = vk.vkCreateDescriptorSetLayout(self.device, set_info, None)
        push_range = vk.VkPushConstantRange(stageFlags=_COMPUTE, offset=0,
                                            size=struct.calcsize(spec.push_format))
        layout_info = vk.VkPipelineLayoutCreateInfo(setLayoutCount=1, pSetLayouts=[set_layout],
                                                    pushConstantRangeCount=1,
                                                    pPushConstantRanges=[push_range])
        layout = vk.vkCreatePipelineLayout(self.device, layout_info, None)
        entries = [vk.VkSpecializationMapEntry(constantID=i, offset=4 * i, size=4)
                   for i in range(4)]
        values = ffi.new("int32_t[]", [width, constant, rows, blocks])
        spec_info = vk.VkSpecializationInfo(mapEntryCount=4, pMapEntries=entries, dataSize=16,
                                            pData=values)
        stage = vk.VkPipelineShaderStageCreateInfo(stage=_COMPUTE, module=module, pName="main",
                                                   pSpecializationInfo=spec_info)
        create = vk.VkComputePipelineCreateInfo(stage=stage, layout=layout)
        pipeline = vk.vkCreateComputePipelines(self.device, vk.VK_NULL_HANDLE, 1, [create],
                                               None)[0]
        self._pipelines[key] = Pipeline(layout, set_layout, pipeline, module, spec,
                                          grid)
        return self._pipelines[key]

    def dispatch(self, pipe: Pipeline, grid: tuple[int, ...], buffers: list[Block],
                 push: tuple) -> None:
        """Record one dispatch; an ITEMS grid counts invocations, the others work-groups. x
        beyond the device limit folds into z (the shaders that can see that many groups
        recover the row with folded_row())."""
        if len(buffers) != pipe.spec.bindings:
            raise ValueError(f"shader wants {pipe.spec.bindings} buffers, got {len(buffers)}")
        if self._sets_in_batch >= _SETS_PER_BATCH and self._capture is None:
            self.flush()
        if self._sets_in_batch >= _SETS_PER_RECORDING:
            raise RecordingError(f"more than {_SETS_PER_RECORDING} dispatches in one recording")
        self._begin()
        alloc = vk.VkDescriptorSetAllocateInfo(descriptorPool=self.descriptor_pool,
                                               descriptorSetCount=1, pSetLayouts=[pipe.set_layout])
        descriptor_set = vk.vkAllocateDescriptorSets(self.device, alloc)[0]
        self._sets_in_batch += 1
        infos = [vk.VkDescriptorBufferInfo(buffer=b.buffer, offset=0, range=b.size)
                 for b in buffers]
        writes = [vk.VkWriteDescriptorSet(dstSet=descriptor_set, dstBinding=i, descriptorCount=1,
                                          descriptorType=vk.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                          pBufferInfo=[info])
                  for i, info in enumerate(infos)]
        vk.vkUpdateDescriptorSets(self.device, len(writes), writes, 0, None)
        vk.vkCmdBindPipeline(self.cmd, vk.VK_PIPELINE_BIND_POINT_COMPUTE, pipe.pipeline)
        vk.vkCmdBindDescriptorSets(self.cmd, vk.VK_PIPELINE_BIND_POINT_COMPUTE, pipe.layout, 0, 1,
                                   [descriptor_set], 0, None)
        data = struct.pack(pipe.spec.push_format, *push)
        vk.vkCmdPushConstants(self.cmd, pipe.layout, _COMPUTE, 0, len(data),
                              ffi.from_buffer(data))
        x, y = grid[0], grid[1]
        if pipe.grid == ITEMS:
            x = -(-x // self.work_group)
        if y > 65535:
            raise ValueError(f"{y} work-groups in y exceed what the shaders index")
        z = -(-x // self.max_groups)
        vk.vkCmdDispatch(self.cmd, min(x, self.max_groups), y, z)
        self._barrier()

    # -- submission ----------------------------------------------------------------------------

    def _begin(self) -> None:
        if not self._recording and self._capture is None and self._slot in self._held:
            self.flush()  # both batches wait (two replays without a download): submit them
        if not self._recording:
            # a recording is submitted again and again: no ONE_TIME_SUBMIT
            once = vk.VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT
            begin = vk.VkCommandBufferBeginInfo(flags=0 if self._capture is not None else once)
            vk.vkBeginCommandBuffer(self.cmd, begin)
            self._recording = True

    def _barrier(self) -> None:
        """Order everything recorded so far before everything after (RAW and WAR)."""
        stages = vk.VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | vk.VK_PIPELINE_STAGE_TRANSFER_BIT
        barrier = vk.VkMemoryBarrier(
            srcAccessMask=vk.VK_ACCESS_SHADER_WRITE_BIT | vk.VK_ACCESS_TRANSFER_WRITE_BIT,
            dstAccessMask=(vk.VK_ACCESS_SHADER_READ_BIT | vk.VK_ACCESS_SHADER_WRITE_BIT
                           | vk.VK_ACCESS_TRANSFER_READ_BIT | vk.VK_ACCESS_TRANSFER_WRITE_BIT),
        )
        vk.vkCmdPipelineBarrier(self.cmd, stages, stages, 0, 1, [barrier], 0, None, 0, None)

    def _end_batch(self) -> None:
        """End the batch being recorded and queue it; later work records into the other."""
        if not self._recording:
            return
        vk.vkEndCommandBuffer(self.cmd)
        self._recording = False
        self._queued.append(self.cmd)
        self._held.append(self._slot)
        self._slot = 1 - self._slot
        self.cmd, self.descriptor_pool = self._slots[self._slot]
        self._sets_in_batch = 0

    def queue_replay(self, recorded: Any) -> None:
        """Queue a recorded command buffer after everything queued so far; the next flush (the
        step's download) submits them all at once."""
        if self._capture is not None:
            raise RecordingError("a replay cannot be recorded")
        self._end_batch()
        self._queued.append(recorded)

    def flush(self) -> None:
        """Submit every queued batch and replay, in order, in one submission, and wait."""
        if self._capture is not None:
            raise RecordingError("work that waits for the device cannot be recorded")
        self._end_batch()
        if not self._queued:
            return
        submit = vk.VkSubmitInfo(commandBufferCount=len(self._queued),
                                 pCommandBuffers=self._queued)
        vk.vkQueueSubmit(self.queue, 1, [submit], self.fence)
        self.submissions += 1
        vk.vkWaitForFences(self.device, 1, [self.fence], vk.VK_TRUE, 0xFFFFFFFFFFFFFFFF)
        vk.vkResetFences(self.device, 1, [self.fence])
        for slot in self._held:
            cmd, pool = self._slots[slot]
            vk.vkResetCommandBuffer(cmd, 0)
            vk.vkResetDescriptorPool(self.device, pool, 0)
        self._queued.clear()
        self._held.clear()
        self._sets_in_batch = 0

    @contextmanager
    def record(self) -> Iterator["VulkanRecording"]:
        """Capture the dispatches (and small writes) queued inside into a command buffer of
        their own; ``replay()`` queues it again, after whatever is queued, for the next flush.
        Per-step values must live in buffers: push constants are frozen when recorded."""
        self.flush()
        recording = VulkanRecording(self)
        saved = (self.cmd, self.descriptor_pool)
        self.cmd, self.descriptor_pool = recording.cmd, recording.pool
        self._capture = recording
        try:
            yield recording
            if self._recording:
                vk.vkEndCommandBuffer(self.cmd)
        except BaseException:
            recording.destroy()
            raise
        finally:
            self._recording = False
            self._sets_in_batch = 0
            self._capture = None
            self.cmd, self.descriptor_pool = saved

    def close(self) -> None:
        self.flush()
        vk.vkDeviceWaitIdle(self.device)
        for recording in list(self._recordings):
            recording.destroy()
        for pipe in self._pipelines.values():
            vk.vkDestroyPipeline(self.device, pipe.pipeline, None)
            vk.vkDestroyPipelineLayout(self.device, pipe.layout, None)
            vk.vkDestroyDescriptorSetLayout(self.device, pipe.set_layout, None)
            vk.vkDestroyShaderModule(self.device, pipe.module, None)
        self._pipelines.clear()
        for block in self._owned + [self.staging]:
            block.destroy()
        self._owned.clear()
        for _, pool in self._slots:
            vk.vkDestroyDescriptorPool(self.device, pool, None)
        vk.vkDestroyFence(self.device, self.fence, None)
        vk.vkDestroyCommandPool(self.device, self.command_pool, None)
        vk.vkDestroyDevice(self.device, None)
        vk.vkDestroyInstance(self.instance, None)

    def synchronize(self) -> None:
        self.flush()

    def info(self) -> dict[str, Any]:
        dev = self.vk_device
        return {"device": dev.info.name, "work_group": dev.work_group,
                "subgroup": dev.subgroup_size, "fp64_rmsnorm_rope": self.use_fp64,
                "int_dot": dev.int_dot, "int_dot_accelerated": dev.int_dot_accelerated}

    def notes(self) -> tuple[str, ...]:
        dev = self.vk_device
        return (f"work-group {dev.work_group} (subgroup {dev.subgroup_size})",
                "int8 dot: " + ("OpSDot (VK_KHR_shader_integer_dot_product)" if dev.int_dot
                                else "portable packed-byte multiply-add"))


class RecordingError(RuntimeError):
    """Work that cannot be captured for replay (it waits for the device, or is too large)."""


class VulkanRecording:
    """A recorded primary command buffer and the descriptor sets it binds."""

    def __init__(self, runtime: VulkanRuntime) -> None:
        self.runtime = runtime
        alloc_info = vk.VkCommandBufferAllocateInfo(commandPool=runtime.command_pool,
                                                    level=vk.VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                                    commandBufferCount=1)
        self.cmd = vk.vkAllocateCommandBuffers(runtime.device, alloc_info)[0]
        sizes = vk.VkDescriptorPoolSize(type=vk.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                        descriptorCount=_SETS_PER_RECORDING * _MAX_BINDINGS)
        pool_info = vk.VkDescriptorPoolCreateInfo(maxSets=_SETS_PER_RECORDING, poolSizeCount=1,
                                                  pPoolSizes=[sizes])
        self.pool = vk.vkCreateDescriptorPool(runtime.device, pool_info, None)
        runtime._recordings.append(self)

    def replay(self) -> None:
        """Run the recorded work again after everything queued, in the same submission as the
        next flush (the step's download)."""
        self.runtime.queue_replay(self.cmd)

    def destroy(self) -> None:
        if self in self.runtime._recordings:
            if any(cmd is self.cmd for cmd in self.runtime._queued):
                self.runtime.flush()  # replayed but not yet submitted
            self.runtime._recordings.remove(self)
            vk.vkFreeCommandBuffers(self.runtime.device, self.runtime.command_pool, 1, [self.cmd])
            vk.vkDestroyDescriptorPool(self.runtime.device, self.pool, None)


def _compute_family(physical: Any) -> int:
    for index, family in enumerate(vk.vkGetPhysicalDeviceQueueFamilyProperties(physical)):
        if family.queueFlags & vk.VK_QUEUE_COMPUTE_BIT:
            return index
    raise RuntimeError("this Vulkan device has no compute queue")

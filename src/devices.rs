//! Devices by name, as `--device` gives them (`cpu`, `cuda:N`, `wgpu`, `wgpu:N`,
//! `wgpu:integrated:N`, `wgpu:cpu`, lists of GPUs of one kind), and the guards around Burn's GPU
//! backends, which panic where a driver, an adapter or memory is missing.

use anyhow::{Context, Result, bail};
use burn::prelude::Device;

/// A parsed `--device`.
#[derive(Debug, PartialEq)]
pub enum DeviceArg {
    /// The CPU, through Burn's Flex backend.
    Cpu,
    /// One or more GPUs of one backend; several train data-parallel.
    Gpus(Vec<Gpu>),
}

/// One GPU, as `--device` names it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gpu {
    /// `cuda:N`.
    Cuda(usize),
    /// `wgpu` (the best adapter), `wgpu:N` (discrete GPU N), `wgpu:integrated:N`, `wgpu:cpu`.
    Wgpu(Adapter),
}

/// A wgpu adapter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Adapter {
    /// The best one found (`wgpu`): a high-power GPU first; `CUBECL_WGPU_DEFAULT_DEVICE`
    /// overrides.
    Best,
    /// Discrete GPU N (`wgpu:N`).
    Discrete(usize),
    /// Integrated GPU N (`wgpu:integrated:N`).
    Integrated(usize),
    /// A software adapter on the CPU (`wgpu:cpu`), such as Mesa's lavapipe.
    Cpu,
}

const DEVICE_FORMS: &str = "cpu, cuda:N, wgpu, wgpu:N, wgpu:integrated[:N], wgpu:cpu, or a list \
                            of GPUs of one kind like cuda:0,cuda:1 (the CPU backend already uses \
                            every core)";

impl Gpu {
    /// One GPU's name (`cuda:1`, `wgpu:cpu`), or `None`.
    #[must_use]
    pub fn parse(part: &str) -> Option<Self> {
        let index = |i: &str| -> Option<usize> {
            if i.is_empty() {
                Some(0)
            } else {
                i.parse().ok()
            }
        };
        if let Some(i) = part.strip_prefix("cuda:").or(part.strip_prefix("cuda")) {
            return index(i).map(Self::Cuda);
        }
        let rest = part.strip_prefix("wgpu")?;
        let adapter = match rest {
            "" => Adapter::Best,
            ":cpu" => Adapter::Cpu,
            ":integrated" => Adapter::Integrated(0),
            r => match r.strip_prefix(":integrated:") {
                Some(i) => Adapter::Integrated(i.parse().ok()?),
                None => Adapter::Discrete(r.strip_prefix(':')?.parse().ok()?),
            },
        };
        Some(Self::Wgpu(adapter))
    }

    /// The name `--device` gives it.
    #[must_use]
    pub fn name(self) -> String {
        match self {
            Self::Cuda(i) => format!("cuda:{i}"),
            Self::Wgpu(Adapter::Best) => "wgpu".into(),
            Self::Wgpu(Adapter::Discrete(i)) => format!("wgpu:{i}"),
            Self::Wgpu(Adapter::Integrated(i)) => format!("wgpu:integrated:{i}"),
            Self::Wgpu(Adapter::Cpu) => "wgpu:cpu".into(),
        }
    }

    /// The device, without autodiff.
    ///
    /// # Panics
    /// For a backend this build lacks; [`parse_device`] refuses those.
    #[must_use]
    pub fn device(self) -> Device {
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        configure_cubecl();
        match self {
            #[cfg(feature = "cuda")]
            Self::Cuda(i) => Device::cuda(i),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(adapter) => {
                use burn::tensor::DeviceKind;
                Device::wgpu(match adapter {
                    Adapter::Best => DeviceKind::DefaultDevice,
                    Adapter::Discrete(i) => DeviceKind::DiscreteGpu(i),
                    Adapter::Integrated(i) => DeviceKind::IntegratedGpu(i),
                    Adapter::Cpu => DeviceKind::Cpu,
                })
            }
            #[allow(unreachable_patterns)]
            other => unreachable!("parse_device refuses {} without its feature", other.name()),
        }
    }
}

/// The variable naming the folder where CubeCL keeps what it learns about a GPU between runs
/// (the kernel each autotuned operation picked, per shape). Unset, CubeCL chooses:
/// `target/environment` of the outermost Cargo workspace around the working directory, or the
/// user's cache directory (`~/.cache/cubecl` on Linux) outside one.
pub const GPU_CACHE_VAR: &str = "AGC_GPU_CACHE";

/// Settles CubeCL's configuration once, before the first GPU device is made: CubeCL's own files
/// (`cubecl.toml`, or the `[cubecl]` section of `burn.toml`) and `CUBECL_*` variables as CubeCL
/// reads them, with [`GPU_CACHE_VAR`]'s folder, when set, as the home of its persistent cache.
/// Says in the log where that cache is, since the first run on a device compiles and times
/// every candidate kernel of every autotuned operation, which takes minutes on a software
/// device with a recent Mesa (docs/gpu.md, "Training that stalls"), and later runs do not.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn configure_cubecl() {
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        if let Some(dir) = std::env::var_os(GPU_CACHE_VAR).filter(|d| !d.is_empty()) {
            config.environment.path = CacheConfig::Directory(dir.into());
        }
        let cache = config.environment.path.root();
        let level = format!("{:?}", config.autotune.level).to_lowercase();
        let cached = !config.autotune.disable_cache;
        if CubeClRuntimeConfig::try_set(config) {
            tracing::info!(
                "GPU kernels are compiled and autotuned (level {level}) on their first use; \
                 the choices are {} (set {GPU_CACHE_VAR} to move them)",
                if cached {
                    format!("kept in {}", cache.display())
                } else {
                    "not kept (CUBECL_AUTOTUNE_CACHE is off)".into()
                }
            );
        }
    });
}

/// `cpu`, a GPU, or a comma-separated list of distinct GPUs of one kind (`cuda:0,cuda:1`).
///
/// # Errors
/// A name that is no device (the message lists the forms), a GPU listed twice, a list that mixes
/// kinds, or a backend this build lacks (with the feature to rebuild with).
pub fn parse_device(name: &str) -> Result<DeviceArg> {
    if name == "cpu" {
        return Ok(DeviceArg::Cpu);
    }
    let mut gpus: Vec<Gpu> = Vec::new();
    for part in name.split(',').map(str::trim) {
        let Some(gpu) = Gpu::parse(part) else {
            bail!("--device {name:?}: {part:?} is not a device; expected {DEVICE_FORMS}");
        };
        if gpus.contains(&gpu) {
            bail!("--device {name:?}: {} is listed twice", gpu.name());
        }
        gpus.push(gpu);
    }
    let cuda = gpus.iter().filter(|g| matches!(g, Gpu::Cuda(_))).count();
    if cuda != 0 && cuda != gpus.len() {
        bail!("--device {name:?}: the GPUs of a list must be of one kind, all cuda or all wgpu");
    }
    if gpus.len() > 1
        && gpus
            .iter()
            .any(|g| matches!(g, Gpu::Wgpu(Adapter::Best | Adapter::Cpu)))
    {
        bail!(
            "--device {name:?}: wgpu and wgpu:cpu may name the same adapter as another entry; \
             list GPUs by index (wgpu:0,wgpu:1) to train data-parallel"
        );
    }
    if cuda > 0 && !cfg!(feature = "cuda") {
        bail!("--device {name}: this agc was built without CUDA; rebuild with --features cuda");
    }
    if cuda == 0 && !cfg!(feature = "wgpu") {
        bail!(
            "--device {name}: this agc was built without wgpu; rebuild with --features wgpu \
             (Vulkan, Metal or DX12 GPUs)"
        );
    }
    Ok(DeviceArg::Gpus(gpus))
}

impl DeviceArg {
    /// The devices as `--device` names them, in order.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::Cpu => vec!["cpu".into()],
            Self::Gpus(gpus) => gpus.iter().map(|g| g.name()).collect(),
        }
    }

    /// The training devices (with autodiff): Burn's Flex backend on the CPU, CUDA or wgpu on
    /// one or more GPUs.
    #[must_use]
    pub fn devices(&self) -> Vec<Device> {
        match self {
            Self::Cpu => vec![Device::flex().autodiff()],
            Self::Gpus(gpus) => gpus.iter().map(|g| g.device().autodiff()).collect(),
        }
    }
}

/// Whether a GPU failure's message says that memory ran out (CubeCL's out-of-memory errors,
/// and a buffer larger than the device allows).
#[must_use]
pub fn is_out_of_memory(why: &str) -> bool {
    let why = why.to_lowercase();
    [
        "out of memory",
        "out-of-memory",
        "out of device memory",
        "outofmemory",
        "can't allocate buffer",
    ]
    .iter()
    .any(|m| why.contains(m))
}

/// Runs `work` on the devices of `device`, after checking that each one computes. On GPUs, a
/// failure inside Burn (which panics) becomes an error naming the device; one that ran out of
/// memory says so with `batch_hint` (the flags that lower the batch sizes, with their values).
///
/// # Errors
/// A device that does not compute, `work`'s own error, or its panic on a GPU.
pub fn run_on<T>(
    device: &DeviceArg,
    batch_hint: &str,
    work: impl FnOnce(&[Device]) -> Result<T>,
) -> Result<T> {
    let devices = device.devices();
    let names = device.names();
    for (d, name) in devices.iter().zip(&names) {
        probe(d).with_context(|| {
            let what = if name.starts_with("wgpu") {
                " (the adapters wgpu found are listed below, if any; `wgpu:cpu` is a software \
                 one)"
            } else {
                ""
            };
            format!("--device {name}: the device is not usable{what}")
        })?;
    }
    if *device == DeviceArg::Cpu {
        return work(&devices);
    }
    match catching_panics(std::panic::AssertUnwindSafe(|| work(&devices))) {
        Ok(result) => result,
        Err(why) if is_out_of_memory(&why) => {
            // CubeCL's report walks every kernel that was skipped; the lines that say what ran
            // out are enough.
            let mut said: Vec<&str> = why
                .lines()
                .map(str::trim)
                .filter(|l| is_out_of_memory(l))
                .collect();
            said.dedup();
            bail!(
                "--device {}: the GPU ran out of memory ({}). Lower {batch_hint}, then run the \
                 same command again: the run resumes from its last finished epoch (a model with \
                 epochs trained keeps its training batch size).",
                names.join(","),
                said.join("; ")
            )
        }
        Err(why) => bail!(
            "--device {}: the computation failed: {why}",
            names.join(",")
        ),
    }
}

/// Runs one small computation on `device`, so that a device that cannot work fails before any
/// work starts.
///
/// # Errors
/// The backend's panic message, or a wrong sum.
pub fn probe(device: &Device) -> Result<()> {
    let outcome = catching_panics(|| {
        let x = burn::Tensor::<1>::from_floats([1.0, 2.0], device);
        (x.clone() + x).sum().into_scalar::<f32>()
    });
    match outcome {
        Ok(v) if (v - 6.0).abs() < 1e-3 => Ok(()),
        Ok(v) => bail!("a test sum gave {v} instead of 6"),
        Err(why) => bail!("{why}"),
    }
}

/// Runs `f`, turning a panic on this thread into its message. Burn's GPU backends panic when
/// the driver cannot be loaded, the GPU is missing or memory runs out; the message is kept, and
/// the default hook's report is not printed. Panics on other threads (data-parallel training's
/// device threads, which report a failed device as an error) still go to the previous hook.
///
/// # Errors
/// The panic's message.
pub fn catching_panics<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Result<T, String> {
    use std::sync::{Arc, Mutex, PoisonError};
    let message = Arc::new(Mutex::new(None::<String>));
    let seen = Arc::clone(&message);
    let previous: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
        Arc::from(std::panic::take_hook());
    let others = Arc::clone(&previous);
    let here = std::thread::current().id();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != here {
            return others(info);
        }
        let text = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| {
                info.payload()
                    .downcast_ref::<&str>()
                    .map(ToString::to_string)
            })
            .unwrap_or_else(|| info.to_string());
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(text);
    }));
    let outcome = std::panic::catch_unwind(f);
    std::panic::set_hook(Box::new(move |info| previous(info)));
    outcome.map_err(|_| {
        message
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| "it panicked".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_passes_the_device_probe() {
        for (device, name) in DeviceArg::Cpu.devices().iter().zip(DeviceArg::Cpu.names()) {
            assert_eq!(name, "cpu");
            probe(device).expect("the CPU computes");
        }
    }

    #[test]
    fn device_names_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_device("cpu").expect("cpu"), DeviceArg::Cpu);
        for bad in [
            "tpu",
            "cpu,cpu",
            "cuda:0,cuda:0",
            "cuda:x",
            "wgpu:",
            "wgpu:gpu",
            "wgpu:integrated:x",
            "cuda:0,wgpu:0",
            "wgpu,wgpu:1",
            "wgpu:0,wgpu:cpu",
            "wgpu:1,wgpu:1",
        ] {
            assert!(parse_device(bad).is_err(), "{bad}");
        }
        let named = |name: &str| parse_device(name).map(|d| d.names());
        if cfg!(feature = "cuda") {
            assert_eq!(
                parse_device("cuda:0, cuda:2").expect("two GPUs"),
                DeviceArg::Gpus(vec![Gpu::Cuda(0), Gpu::Cuda(2)])
            );
            assert_eq!(named("cuda").expect("cuda"), ["cuda:0"]);
        } else {
            let err = parse_device("cuda:0").expect_err("no cuda").to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
        if cfg!(feature = "wgpu") {
            for (given, names) in [
                ("wgpu", vec!["wgpu"]),
                ("wgpu:cpu", vec!["wgpu:cpu"]),
                ("wgpu:integrated", vec!["wgpu:integrated:0"]),
                ("wgpu:1, wgpu:0", vec!["wgpu:1", "wgpu:0"]),
            ] {
                assert_eq!(named(given).expect(given), names);
            }
        } else {
            let err = parse_device("wgpu").expect_err("no wgpu").to_string();
            assert!(err.contains("--features wgpu"), "{err}");
        }
        assert!(is_out_of_memory(
            "An IO error happened\nCaused by:\n  can't allocate buffer of size: 1073741824"
        ));
        assert!(is_out_of_memory(
            "out of device memory allocating 512 bytes"
        ));
        assert!(!is_out_of_memory(
            "A compilation error happened during launch"
        ));
    }

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(catching_panics(|| 2), Ok(2));
        let err = catching_panics(|| -> u8 { panic!("out of device memory allocating 8 bytes") });
        assert_eq!(
            err,
            Err("out of device memory allocating 8 bytes".to_string())
        );
        // A panic on another thread is not this call's failure (its thread reports it): the
        // message is this thread's own.
        let err = catching_panics(|| -> u8 {
            let _ = std::thread::spawn(|| panic!("elsewhere")).join();
            panic!("here")
        });
        assert_eq!(err, Err("here".to_string()));
    }
}

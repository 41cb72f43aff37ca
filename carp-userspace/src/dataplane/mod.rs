//! The dataplane loader: loads the XDP object, pins its maps and link under the bpffs, attaches it to a
//! carpdev in the right mode, adopts an existing attachment after a controller restart, and detaches on
//! request.
//!
//! Pin layout: the real pins live in `<bpffs>/v<LAYOUT_VERSION>/<carpdev>/`, and `<bpffs>/<carpdev>` is a
//! symlink to it, so operators and bpftool use a stable path while a controller only ever adopts pins
//! whose layout version it understands.

pub mod flows;
pub mod maps;
pub mod reinject;

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use carp_common::maps::{
    FLOW_SLOTS, LAYOUT_VERSION, MAP_ADVERT_LIMITS, MAP_ADVERT_SOURCES, MAP_BALANCE, MAP_EVENTS,
    MAP_FLOW_CONF, MAP_FLOW_EVENTS, MAP_FLOW_STATS, MAP_FLOWS, MAP_LAST_ADVERT, MAP_STATS,
    MAP_VHIDS, MAP_VIPS,
};
use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

/// The XDP object built from carp-ebpf by build.rs.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/carp-xdp"));
/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "carp_xdp";
/// Name of the trivial XDP_PASS program in the object (benchmark baseline, native-veth peer helper).
pub const PASS_PROGRAM_NAME: &str = "carp_pass";
/// Name of the pinned XDP link.
pub const LINK_PIN: &str = "link";
/// Every per-carpdev map the controller pins.
pub const MAP_NAMES: [&str; 10] = [
    MAP_STATS,
    MAP_VHIDS,
    MAP_VIPS,
    MAP_LAST_ADVERT,
    MAP_EVENTS,
    MAP_BALANCE,
    MAP_FLOW_CONF,
    MAP_FLOW_STATS,
    MAP_ADVERT_LIMITS,
    MAP_ADVERT_SOURCES,
];
/// Maps shared by every carpdev of one controller (pinned once in `<bpffs>/v<LAYOUT_VERSION>/`, and
/// linked into each carpdev's directory for bpftool): both directions of a flow cross different
/// carpdevs, so their programs must see one flow table and the controller reads one event ring.
pub const SHARED_MAP_NAMES: [&str; 2] = [MAP_FLOWS, MAP_FLOW_EVENTS];
/// Default bpffs directory for carp pins.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/carp";

/// Errors of the loader, each naming what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The eBPF object could not be loaded (verifier, missing BTF, permissions).
    #[error(
        "loading the XDP object failed: {0} (needs root or CAP_BPF+CAP_NET_ADMIN, and a kernel >= 5.15 with BTF)"
    )]
    Load(#[from] aya::EbpfError),
    /// The program could not be loaded or attached.
    #[error("XDP program on {carpdev}: {source}")]
    Program {
        /// The interface.
        carpdev: String,
        /// What aya reported.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A pin could not be created or opened.
    #[error("pin {path}: {message}")]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An operation on a map failed (like aya's `SyscallError`: which map, which operation, why).
    #[error("map {map}: {op} failed: {source}")]
    Map {
        /// The map's name (`carp_vhids`, ...).
        map: &'static str,
        /// The operation: open, lookup, update, delete, iterate.
        op: &'static str,
        /// What aya reported.
        #[source]
        source: aya::maps::MapError,
    },
    /// The interface does not exist.
    #[error("carpdev {0} does not exist (check `ip link`)")]
    NoSuchDevice(String),
    /// A map is missing from the object (a build problem).
    #[error("map {0} is missing from the XDP object")]
    MissingMap(&'static str),
    /// A program is missing from the object (a build problem).
    #[error("program {0} is missing from the XDP object")]
    MissingProgram(&'static str),
    /// A balancing group the XDP program could not use (a controller bug).
    #[error("balancing group refused: {0}")]
    Balance(#[from] crate::balance::BalanceError),
}

/// How to attach: the operator's `--xdp-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Native where the driver really transmits XDP_TX frames, generic otherwise.
    #[default]
    Auto,
    /// Driver (native) mode.
    Native,
    /// Generic (skb) mode.
    Skb,
}

impl FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "native" | "drv" | "driver" => Ok(Self::Native),
            "skb" | "generic" => Ok(Self::Skb),
            other => Err(format!(
                "unknown XDP mode {other:?}: use auto, native or skb"
            )),
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Skb => "skb",
        })
    }
}

/// Drivers whose native XDP_TX does not put frames on the wire for an ordinary peer (veth needs an XDP
/// program on the peer; the others have no native XDP or only a stub), so auto mode uses generic XDP.
const GENERIC_ONLY_DRIVERS: [&str; 7] = [
    "veth", "bridge", "macvlan", "ipvlan", "dummy", "tun", "vxlan",
];

/// The mode auto picks for a driver.
pub fn auto_mode_for_driver(driver: Option<&str>) -> XdpMode {
    match driver {
        Some(d) if GENERIC_ONLY_DRIVERS.contains(&d) => XdpMode::Skb,
        // An unknown driver (no ethtool answer) is tried natively, falling back to generic.
        _ => XdpMode::Driver,
    }
}

/// The pin directory of one carpdev for this layout version.
pub fn pin_dir(bpffs: &Path, carpdev: &str) -> PathBuf {
    bpffs.join(format!("v{LAYOUT_VERSION}")).join(carpdev)
}

/// The loaded (or adopted) dataplane of one carpdev: its maps, and the program while we own it.
pub struct Dataplane {
    /// The carpdev.
    pub carpdev: String,
    /// Where the pins live.
    pub pin_dir: PathBuf,
    /// The mode the program was attached in (`Default` when an existing attachment was adopted).
    pub mode: XdpMode,
    /// True when an existing attachment was adopted rather than created.
    pub adopted: bool,
    ebpf: Ebpf,
}

impl Dataplane {
    /// Loads the object with its maps pinned (reusing existing pins of the same layout), attaches it to
    /// `carpdev` unless a pinned link already attaches it, and pins the link.
    pub fn attach(carpdev: &str, bpffs: &Path, mode: AttachMode) -> Result<Self, DataplaneError> {
        Self::attach_with_flow_limit(carpdev, bpffs, mode, FLOW_SLOTS)
    }

    /// `attach`, creating the flow table (if no pinned one is there yet) with `flow_limit` slots
    /// (`[flows] limit`; 0: the default).
    pub fn attach_with_flow_limit(
        carpdev: &str,
        bpffs: &Path,
        mode: AttachMode,
        flow_limit: u32,
    ) -> Result<Self, DataplaneError> {
        if_index(carpdev)?;
        let dir = pin_dir(bpffs, carpdev);
        mkdir_bpffs(&dir)?;
        link_stable_path(bpffs, carpdev)?;
        let flow_limit = if flow_limit == 0 {
            FLOW_SLOTS
        } else {
            flow_limit
        };
        let mut ebpf = load_with_pins_sized(&dir, flow_limit)?;
        let link_path = dir.join(LINK_PIN);
        let program: &mut Xdp = program_mut(&mut ebpf, carpdev)?;
        program.load().map_err(|source| DataplaneError::Program {
            carpdev: carpdev.into(),
            source,
        })?;
        if let Ok(existing) = PinnedLink::from_pin(&link_path) {
            // A controller restart: keep the attachment, swap in this build's program atomically.
            let fd_link: FdLink = existing.into();
            let xdp_link = XdpLink::try_from(fd_link).map_err(|e| DataplaneError::Pin {
                path: link_path.clone(),
                message: format!("pinned link is not an XDP link: {e}"),
            })?;
            match program.attach_to_link(xdp_link) {
                Ok(_) => {
                    tracing::info!(carpdev, "adopted the pinned XDP link");
                    return Ok(Self {
                        carpdev: carpdev.into(),
                        pin_dir: dir,
                        // The attachment keeps the mode it was created with.
                        mode: XdpMode::Default,
                        adopted: true,
                        ebpf,
                    });
                }
                // The pinned link's device is gone (deleted and created again while no carpd ran,
                // issue #16 item 10): the pin is stale, attach afresh.
                Err(e) => {
                    tracing::warn!(carpdev, error = %e, "the pinned XDP link cannot be adopted (its device was re-created?); attaching afresh");
                    let _ = std::fs::remove_file(&link_path);
                }
            }
        }
        let chosen = match mode {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
            AttachMode::Auto => auto_mode_for_driver(driver_name(carpdev).as_deref()),
        };
        let (link_id, used) = match program.attach(carpdev, chosen) {
            Ok(id) => (id, chosen),
            Err(e) if mode == AttachMode::Auto && chosen == XdpMode::Driver => {
                tracing::info!(carpdev, error = %e, "native XDP refused, using generic");
                let id = program.attach(carpdev, XdpMode::Skb).map_err(|source| {
                    DataplaneError::Program {
                        carpdev: carpdev.into(),
                        source,
                    }
                })?;
                (id, XdpMode::Skb)
            }
            Err(source) => {
                return Err(DataplaneError::Program {
                    carpdev: carpdev.into(),
                    source,
                });
            }
        };
        let link = program
            .take_link(link_id)
            .map_err(|source| DataplaneError::Program {
                carpdev: carpdev.into(),
                source,
            })?;
        let fd_link: FdLink = link.try_into().map_err(|e| DataplaneError::Pin {
            path: link_path.clone(),
            message: format!("the kernel attached XDP through netlink, not a bpf_link ({e}); kernel >= 5.9 is needed"),
        })?;
        fd_link.pin(&link_path).map_err(|e| DataplaneError::Pin {
            path: link_path.clone(),
            message: e.to_string(),
        })?;
        tracing::info!(carpdev, mode = ?used, requested = %mode, "XDP attached");
        Ok(Self {
            carpdev: carpdev.into(),
            pin_dir: dir,
            mode: used,
            adopted: false,
            ebpf,
        })
    }

    /// Loads the object (both programs) with private (unpinned) maps and no attachment, for
    /// BPF_PROG_TEST_RUN.
    pub fn load_unattached() -> Result<Self, DataplaneError> {
        let mut ebpf = EbpfLoader::new().load(XDP_OBJECT)?;
        for name in [PROGRAM_NAME, PASS_PROGRAM_NAME] {
            let program: &mut Xdp = named_program_mut(&mut ebpf, name, "test_run")?;
            program.load().map_err(|source| DataplaneError::Program {
                carpdev: "test_run".into(),
                source,
            })?;
        }
        Ok(Self {
            carpdev: String::new(),
            pin_dir: PathBuf::new(),
            mode: XdpMode::Default,
            adopted: false,
            ebpf,
        })
    }

    /// The loaded program.
    pub fn program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        program_mut(&mut self.ebpf, &self.carpdev)
    }

    /// The trivial XDP_PASS program (loaded only by `load_unattached`).
    pub fn pass_program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        named_program_mut(&mut self.ebpf, PASS_PROGRAM_NAME, &self.carpdev)
    }

    /// The maps, for the controller.
    pub fn maps(&mut self) -> Result<maps::Maps, DataplaneError> {
        maps::Maps::take(&mut self.ebpf)
    }

    /// Detaches the program and removes every pin of this carpdev (an operator's clean stop).
    /// Unpins the XDP link of a carpdev that was deleted (the kernel detached the program with the
    /// device, and a pin of a defunct link cannot be adopted): the next attach creates a fresh one.
    /// The maps stay pinned.
    pub fn forget_link(carpdev: &str, bpffs: &Path) {
        let _ = std::fs::remove_file(pin_dir(bpffs, carpdev).join(LINK_PIN));
    }

    pub fn detach(carpdev: &str, bpffs: &Path) -> Result<(), DataplaneError> {
        let dir = pin_dir(bpffs, carpdev);
        let link_path = dir.join(LINK_PIN);
        if let Ok(link) = PinnedLink::from_pin(&link_path) {
            // Unpinning drops the last reference, which detaches the program.
            let _ = link.unpin();
        }
        for name in MAP_NAMES.iter().chain(&SHARED_MAP_NAMES) {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let _ = std::fs::remove_dir(&dir);
        flows::remove_shared_pins_if_unused(bpffs);
        let stable = bpffs.join(carpdev);
        if std::fs::symlink_metadata(&stable).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(&stable);
        }
        Ok(())
    }
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, carpdev: &str) -> Result<&'a mut Xdp, DataplaneError> {
    named_program_mut(ebpf, PROGRAM_NAME, carpdev)
}

fn named_program_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
    carpdev: &str,
) -> Result<&'a mut Xdp, DataplaneError> {
    let program = ebpf
        .program_mut(name)
        .ok_or(DataplaneError::MissingProgram(name))?;
    program
        .try_into()
        .map_err(|source| DataplaneError::Program {
            carpdev: carpdev.into(),
            source,
        })
}

fn load_with_pins(dir: &Path) -> Result<Ebpf, DataplaneError> {
    load_with_pins_sized(dir, FLOW_SLOTS)
}

/// `load_with_pins`, a flow table created here getting `flow_limit` slots.
fn load_with_pins_sized(dir: &Path, flow_limit: u32) -> Result<Ebpf, DataplaneError> {
    let mut paths: Vec<(&str, PathBuf)> = MAP_NAMES.iter().map(|n| (*n, dir.join(n))).collect();
    // The shared maps live one level up (`<bpffs>/v<N>/`), next to every carpdev's directory.
    let shared = dir.parent().unwrap_or(dir);
    paths.extend(SHARED_MAP_NAMES.iter().map(|n| (*n, shared.join(n))));
    let mut loader = EbpfLoader::new();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    // Only a newly created table takes the size; an existing pin is reused as it is.
    loader.map_max_entries(MAP_FLOWS, flow_limit);
    let ebpf = loader.load(XDP_OBJECT)?;
    flows::link_shared_pins(&ebpf, dir)?;
    Ok(ebpf)
}

/// Where the bpffs lives on every distribution that has one.
const SYS_FS_BPF: &str = "/sys/fs/bpf";

/// True when a bpffs is mounted at /sys/fs/bpf.
fn sys_fs_bpf_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&SYS_FS_BPF) && f.get(2) == Some(&"bpf")
        })
    })
}

/// Mounts the bpffs at /sys/fs/bpf when pins go there and nothing is mounted (systemd normally does it;
/// a bare netns lab or a minimal system may not), as bpftool does when it pins.
fn ensure_sys_fs_bpf(dir: &Path) {
    if !dir.starts_with(SYS_FS_BPF) || sys_fs_bpf_mounted() {
        return;
    }
    let (src, target, fstype) = (c"bpf", c"/sys/fs/bpf", c"bpf");
    // SAFETY: NUL-terminated constant strings and no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        tracing::info!("mounted a bpffs at {SYS_FS_BPF} for the pins");
    }
}

fn mkdir_bpffs(dir: &Path) -> Result<(), DataplaneError> {
    ensure_sys_fs_bpf(dir);
    std::fs::create_dir_all(dir).map_err(|e| DataplaneError::Pin {
        path: dir.into(),
        message: format!(
            "{e} (is a bpffs mounted at {}? `mount -t bpf bpf /sys/fs/bpf`)",
            dir.display()
        ),
    })
}

fn link_stable_path(bpffs: &Path, carpdev: &str) -> Result<(), DataplaneError> {
    let stable = bpffs.join(carpdev);
    let target = PathBuf::from(format!("v{LAYOUT_VERSION}")).join(carpdev);
    match std::fs::read_link(&stable) {
        Ok(t) if t == target => return Ok(()),
        Ok(_) => {
            let _ = std::fs::remove_file(&stable);
        }
        Err(_) if stable.exists() => {
            return Err(DataplaneError::Pin {
                path: stable,
                message: "exists and is not our symlink; remove it".into(),
            });
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&target, &stable).map_err(|e| DataplaneError::Pin {
        path: stable,
        message: e.to_string(),
    })
}

/// bpf(2) with `attr` as the command's `union bpf_attr` prefix, for the commands aya 0.14 does not
/// offer (map batches, live-frames test runs); the kernel's non-negative return value or errno.
///
/// # Safety
/// `attr` must be laid out as the kernel's `union bpf_attr` member for `cmd`, and every pointer in it
/// must be valid for what the kernel reads or writes through it during the call.
pub unsafe fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: the caller vouches for the attr and its pointers; the size is the attr's own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The interface index of a device.
pub fn if_index(name: &str) -> Result<u32, DataplaneError> {
    let c = std::ffi::CString::new(name).map_err(|_| DataplaneError::NoSuchDevice(name.into()))?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(DataplaneError::NoSuchDevice(name.into()));
    }
    Ok(idx)
}

/// The kernel driver of a device (ETHTOOL_GDRVINFO), e.g. "veth".
pub fn driver_name(ifname: &str) -> Option<String> {
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut DrvInfo,
        pad: [u8; 16],
    }
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    if ifname.len() >= libc::IFNAMSIZ {
        return None;
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 160],
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut info,
        pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: plain socket/ioctl/close with valid, live buffers.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let rc = libc::ioctl(fd, libc::SIOCETHTOOL, &mut req);
        libc::close(fd);
        if rc != 0 {
            return None;
        }
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

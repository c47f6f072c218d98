//! Driver configuration: registry values under the device's `Parameters` key.
//!
//! C header: none; the values are written by `inf/vmbridge.inx` (`HKR,Parameters,...`)
//! and read by the KMDF glue with `WdfDeviceOpenRegistryKey` + `WdfRegistryQueryULong`.
//!
//! The configuration is a plain struct parsed from key/value pairs, so the same parser
//! serves the registry (Windows), the simulator and the tests. Parsing never fails: an
//! unknown key, a wrong type or an out-of-range value is reported as an [`Issue`] and
//! the default is kept, so a bad registry edit cannot stop the device from starting.

use alloc::vec::Vec;

/// Registry value name of [`Config::processing_mode`] (`REG_DWORD`: 0 dispatch, 1 passive).
pub const KEY_PROCESSING_MODE: &str = "ProcessingMode";
/// Registry value name of [`Config::queue_depth`] (`REG_DWORD`).
pub const KEY_QUEUE_DEPTH: &str = "QueueDepth";
/// Registry value name of [`Config::max_packet_size`] (`REG_DWORD`).
pub const KEY_MAX_PACKET_SIZE: &str = "MaxPacketSize";
/// Registry value name of [`Config::max_pending_reads`] (`REG_DWORD`).
pub const KEY_MAX_PENDING_READS: &str = "MaxPendingReads";
/// Registry value name of [`Config::max_pending_sends`] (`REG_DWORD`).
pub const KEY_MAX_PENDING_SENDS: &str = "MaxPendingSends";
/// Registry value name of [`Config::ring_buffer_pages`] (`REG_DWORD`).
pub const KEY_RING_BUFFER_PAGES: &str = "RingBufferPages";
/// Registry value name of [`Config::max_posted_sends`] (`REG_DWORD`).
pub const KEY_MAX_POSTED_SENDS: &str = "MaxPostedSends";

/// Every value name the parser understands (the INF test checks the INF against it).
pub const KEYS: [&str; 7] = [
    KEY_PROCESSING_MODE,
    KEY_QUEUE_DEPTH,
    KEY_MAX_PACKET_SIZE,
    KEY_MAX_PENDING_READS,
    KEY_MAX_PENDING_SENDS,
    KEY_RING_BUFFER_PAGES,
    KEY_MAX_POSTED_SENDS,
];

/// Where incoming packets are processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessingMode {
    /// KMCL's DPC at DISPATCH_LEVEL (the KMCL default). Registry value 0.
    Dispatch,
    /// KMCL's worker thread at PASSIVE_LEVEL (`VmbChannelSetIncomingProcessingAtPassive`).
    /// Registry value 1.
    Passive,
}

impl ProcessingMode {
    /// The registry encoding (0 or 1).
    #[must_use]
    pub const fn as_dword(self) -> u32 {
        match self {
            Self::Dispatch => 0,
            Self::Passive => 1,
        }
    }

    /// Parses the registry encoding.
    #[must_use]
    pub const fn from_dword(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Dispatch),
            1 => Some(Self::Passive),
            _ => None,
        }
    }

    /// Parses `dispatch` / `passive` (any case), as the simulator's `--mode` takes.
    #[must_use]
    pub fn from_name(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("dispatch") {
            Some(Self::Dispatch)
        } else if s.eq_ignore_ascii_case("passive") {
            Some(Self::Passive)
        } else {
            None
        }
    }

    /// `dispatch` or `passive`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Dispatch => "dispatch",
            Self::Passive => "passive",
        }
    }
}

/// A registry value as the glue read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// `REG_DWORD`.
    Dword(u32),
    /// `REG_SZ` (accepted for `ProcessingMode`: `dispatch` / `passive`).
    Str(&'a str),
}

/// Why a value was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueKind {
    /// The name is none of [`KEYS`].
    UnknownKey,
    /// `REG_SZ` where a `REG_DWORD` is required, or an unknown mode name.
    WrongType,
    /// Outside the documented range; the default was kept.
    OutOfRange,
    /// `MaxPacketSize` larger than one packet of the `RingBufferPages` ring can carry;
    /// lowered to [`Config::ring_payload_limit`].
    DoesNotFitRing,
}

/// One ignored value: its (known) key or `"?"`, what was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Issue {
    /// The registry value name, as in [`KEYS`] (or `"?"` for an unknown key).
    pub key: &'static str,
    /// What was wrong.
    pub kind: IssueKind,
}

/// The bridge's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// DISPATCH (default) or PASSIVE processing of incoming packets.
    pub processing_mode: ProcessingMode,
    /// Packets held for user mode (queued or awaiting a response), 1..=4096, default 64.
    /// Also the channel's transaction quota, so KMCL never delivers more.
    pub queue_depth: u32,
    /// Largest payload sent or received, 64..=1 MiB, default 4096; never more than one
    /// packet of the ring holds ([`Config::ring_payload_limit`]): a larger value is
    /// lowered to that limit ([`Config::fit_ring`]).
    pub max_packet_size: u32,
    /// Reads that may pend at once, 1..=1024, default 64.
    pub max_pending_reads: u32,
    /// Sends that may wait for a completion at once, 1..=1024, default 32.
    pub max_pending_sends: u32,
    /// Pages of each ring (incoming and outgoing), 2..=512, default 16.
    pub ring_buffer_pages: u32,
    /// Sends without a completion wait (`WriteFile`, no-wait `IOCTL_VMBRIDGE_SEND`) that
    /// KMCL may hold at once, accepted but not yet written into the ring (a host that
    /// stops reading fills the ring, then this many): beyond it such a send fails with
    /// `STATUS_DEVICE_BUSY`. 1..=4096, default 256.
    pub max_posted_sends: u32,
}

/// Inclusive ranges of the numeric keys.
const QUEUE_DEPTH_RANGE: (u32, u32) = (1, 4096);
const MAX_PACKET_SIZE_RANGE: (u32, u32) = (64, 1 << 20);
const PENDING_RANGE: (u32, u32) = (1, 1024);
const RING_PAGES_RANGE: (u32, u32) = (2, 512);
const POSTED_RANGE: (u32, u32) = (1, 4096);

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Config {
    /// The defaults (also written by the INF).
    pub const DEFAULT: Self = Self {
        processing_mode: ProcessingMode::Dispatch,
        queue_depth: 64,
        max_packet_size: 4096,
        max_pending_reads: 64,
        max_pending_sends: 32,
        ring_buffer_pages: 16,
        max_posted_sends: 256,
    };

    /// Parses key/value pairs (value names are case-insensitive, as in the registry).
    /// Later values for the same key win. Never fails; see [`Parsed::issues`].
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, Value<'a>)>) -> Parsed {
        let mut config = Self::DEFAULT;
        let mut issues = Vec::new();
        for (name, value) in pairs {
            if IC_KEYS.iter().any(|k| k.eq_ignore_ascii_case(name)) {
                continue; // read by IcConfig::parse
            }
            let Some(key) = KEYS.iter().copied().find(|k| k.eq_ignore_ascii_case(name)) else {
                issues.push(Issue {
                    key: "?",
                    kind: IssueKind::UnknownKey,
                });
                continue;
            };
            if let Err(kind) = config.apply(key, value) {
                issues.push(Issue { key, kind });
            }
        }
        let fitted = config.fit_ring();
        if fitted.max_packet_size != config.max_packet_size {
            issues.push(Issue {
                key: KEY_MAX_PACKET_SIZE,
                kind: IssueKind::DoesNotFitRing,
            });
        }
        Parsed {
            config: fitted,
            issues,
        }
    }

    /// The largest payload one packet of a `ring_pages`-page ring can carry (pages
    /// counted with the ring's control page, as `RingBufferPages`): the data area is
    /// `(ring_pages - 1) * 4096` bytes and one packet takes its 16-byte descriptor, the
    /// payload padded to 8 bytes, the 8-byte trailer, and leaves 8 bytes free (a full
    /// ring would read as empty; `crates/kmcl-sim/src/ring/`); 8 more for the pipe header of
    /// IC mode. Sends and completions larger than this could never be written: KMCL
    /// fails such a send and has no way to report a completion it cannot write.
    #[must_use]
    pub const fn ring_payload_limit(ring_pages: u32) -> u32 {
        let data = ring_pages.saturating_sub(1).saturating_mul(4096);
        (data.saturating_sub(16 + 8 + 8 + 8)) & !7
    }

    /// This configuration with `max_packet_size` lowered to what the ring can carry
    /// ([`Config::ring_payload_limit`]), so that no send and no completion (the response
    /// to a held packet) the bridge accepts can fail to fit. `Bridge::new` applies it;
    /// [`Config::parse`] reports the change as [`IssueKind::DoesNotFitRing`].
    #[must_use]
    pub const fn fit_ring(mut self) -> Self {
        let limit = Self::ring_payload_limit(self.ring_buffer_pages);
        if self.max_packet_size > limit {
            self.max_packet_size = limit;
        }
        self
    }

    fn apply(&mut self, key: &'static str, value: Value<'_>) -> Result<(), IssueKind> {
        if key == KEY_PROCESSING_MODE {
            let mode = match value {
                Value::Dword(v) => ProcessingMode::from_dword(v).ok_or(IssueKind::OutOfRange)?,
                Value::Str(s) => ProcessingMode::from_name(s).ok_or(IssueKind::WrongType)?,
            };
            self.processing_mode = mode;
            return Ok(());
        }
        let Value::Dword(v) = value else {
            return Err(IssueKind::WrongType);
        };
        let (slot, (lo, hi)) = match key {
            KEY_QUEUE_DEPTH => (&mut self.queue_depth, QUEUE_DEPTH_RANGE),
            KEY_MAX_PACKET_SIZE => (&mut self.max_packet_size, MAX_PACKET_SIZE_RANGE),
            KEY_MAX_PENDING_READS => (&mut self.max_pending_reads, PENDING_RANGE),
            KEY_MAX_PENDING_SENDS => (&mut self.max_pending_sends, PENDING_RANGE),
            KEY_MAX_POSTED_SENDS => (&mut self.max_posted_sends, POSTED_RANGE),
            _ => (&mut self.ring_buffer_pages, RING_PAGES_RANGE),
        };
        if !(lo..=hi).contains(&v) {
            return Err(IssueKind::OutOfRange);
        }
        *slot = v;
        Ok(())
    }
}

/// Registry value name of [`IcConfig::service`] (`REG_DWORD`: 0 off, 1 heartbeat,
/// 2 shutdown, 3 time sync; see `docs/ic.md`).
pub const KEY_IC_SERVICE: &str = "IcService";
/// Registry value name of [`IcConfig::timeout_ms`] (`REG_DWORD`, milliseconds).
pub const KEY_IC_TIMEOUT_MS: &str = "IcTimeoutMs";
/// The IC-mode value names ([`IcConfig::parse`]); [`Config::parse`] skips them.
pub const IC_KEYS: [&str; 2] = [KEY_IC_SERVICE, KEY_IC_TIMEOUT_MS];

/// The integration-component service a device speaks in IC mode (`driver/ic.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcService {
    /// Heartbeat (registry value 1): answered in the kernel.
    Heartbeat,
    /// Shutdown (2): forwarded to user mode, answered when it decides.
    Shutdown,
    /// Time sync (3): forwarded to user mode, answered when it acknowledges.
    TimeSync,
}

impl IcService {
    /// The registry encoding (1..=3).
    #[must_use]
    pub const fn as_dword(self) -> u32 {
        match self {
            Self::Heartbeat => 1,
            Self::Shutdown => 2,
            Self::TimeSync => 3,
        }
    }

    /// Parses the registry encoding: `Ok(None)` for 0 (IC mode off).
    ///
    /// # Errors
    ///
    /// `OutOfRange` above 3.
    pub const fn from_dword(v: u32) -> Result<Option<Self>, IssueKind> {
        match v {
            0 => Ok(None),
            1 => Ok(Some(Self::Heartbeat)),
            2 => Ok(Some(Self::Shutdown)),
            3 => Ok(Some(Self::TimeSync)),
            _ => Err(IssueKind::OutOfRange),
        }
    }

    /// `heartbeat`, `shutdown` or `timesync`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Heartbeat => "heartbeat",
            Self::Shutdown => "shutdown",
            Self::TimeSync => "timesync",
        }
    }

    /// Parses [`IcService::name`] (any case), or `off` (`Ok(None)`).
    ///
    /// # Errors
    ///
    /// `WrongType` for any other name.
    pub fn from_name(s: &str) -> Result<Option<Self>, IssueKind> {
        [Self::Heartbeat, Self::Shutdown, Self::TimeSync]
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(s))
            .map(Some)
            .or_else(|| s.eq_ignore_ascii_case("off").then_some(None))
            .ok_or(IssueKind::WrongType)
    }
}

/// IC mode: whether the device runs an IC protocol instead of the plain bridge, and how
/// long user mode may take to answer a forwarded request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcConfig {
    /// `None` (default): the plain bridge. `Some(s)`: IC mode for service `s` (the channel
    /// is opened in pipe mode; see `docs/ic.md`).
    pub service: Option<IcService>,
    /// Milliseconds user mode has to answer a forwarded shutdown or time sync request
    /// before the host is answered with a failure, 100..=600000, default 30000.
    pub timeout_ms: u32,
}

const IC_TIMEOUT_RANGE: (u32, u32) = (100, 600_000);

impl Default for IcConfig {
    fn default() -> Self {
        Self::OFF
    }
}

impl IcConfig {
    /// IC mode off (the defaults, also written by the INF).
    pub const OFF: Self = Self {
        service: None,
        timeout_ms: 30_000,
    };

    /// IC mode for `service` with the default timeout.
    #[must_use]
    pub const fn for_service(service: IcService) -> Self {
        Self {
            service: Some(service),
            timeout_ms: Self::OFF.timeout_ms,
        }
    }

    /// Parses the [`IC_KEYS`] among `pairs` (other keys are [`Config::parse`]'s and are
    /// skipped). Never fails: a bad value keeps the default and is reported.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, Value<'a>)>) -> (Self, Vec<Issue>) {
        Self::parse_onto(Self::OFF, pairs)
    }

    /// As [`IcConfig::parse`], starting from `base` instead of the defaults: the KMDF glue
    /// applies a device's own values (its hardware key) over the service-wide ones.
    pub fn parse_onto<'a>(
        base: Self,
        pairs: impl IntoIterator<Item = (&'a str, Value<'a>)>,
    ) -> (Self, Vec<Issue>) {
        let mut config = base;
        let mut issues = Vec::new();
        for (name, value) in pairs {
            let Some(key) = IC_KEYS
                .iter()
                .copied()
                .find(|k| k.eq_ignore_ascii_case(name))
            else {
                continue;
            };
            let result = match (key, value) {
                (KEY_IC_SERVICE, Value::Dword(v)) => {
                    IcService::from_dword(v).map(|s| config.service = s)
                }
                (KEY_IC_SERVICE, Value::Str(s)) => {
                    IcService::from_name(s).map(|s| config.service = s)
                }
                (_, Value::Dword(v)) => {
                    if (IC_TIMEOUT_RANGE.0..=IC_TIMEOUT_RANGE.1).contains(&v) {
                        config.timeout_ms = v;
                        Ok(())
                    } else {
                        Err(IssueKind::OutOfRange)
                    }
                }
                (_, Value::Str(_)) => Err(IssueKind::WrongType),
            };
            if let Err(kind) = result {
                issues.push(Issue { key, kind });
            }
        }
        (config, issues)
    }
}

/// The result of [`Config::parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The configuration (defaults where a value was missing or ignored).
    pub config: Config,
    /// Values that were ignored, in input order.
    pub issues: Vec<Issue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_values_take_defaults() {
        let p = Config::parse([]);
        assert_eq!(p.config, Config::DEFAULT);
        assert!(p.issues.is_empty());
    }

    #[test]
    fn parses_every_key_case_insensitively() {
        let p = Config::parse([
            ("processingmode", Value::Dword(1)),
            ("QUEUEDEPTH", Value::Dword(8)),
            ("MaxPacketSize", Value::Dword(65536)),
            ("MaxPendingReads", Value::Dword(2)),
            ("MaxPendingSends", Value::Dword(3)),
            ("RingBufferPages", Value::Dword(64)),
            ("maxpostedsends", Value::Dword(9)),
        ]);
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        assert_eq!(
            p.config,
            Config {
                processing_mode: ProcessingMode::Passive,
                queue_depth: 8,
                max_packet_size: 65536,
                max_pending_reads: 2,
                max_pending_sends: 3,
                ring_buffer_pages: 64,
                max_posted_sends: 9,
            }
        );
    }

    #[test]
    fn out_of_range_value_keeps_default_and_reports() {
        let p = Config::parse([
            ("QueueDepth", Value::Dword(0)),
            ("ProcessingMode", Value::Dword(2)),
            ("MaxPacketSize", Value::Dword(8)),
        ]);
        assert_eq!(p.config, Config::DEFAULT);
        assert_eq!(
            p.issues,
            [
                Issue {
                    key: KEY_QUEUE_DEPTH,
                    kind: IssueKind::OutOfRange
                },
                Issue {
                    key: KEY_PROCESSING_MODE,
                    kind: IssueKind::OutOfRange
                },
                Issue {
                    key: KEY_MAX_PACKET_SIZE,
                    kind: IssueKind::OutOfRange
                },
            ]
        );
    }

    #[test]
    fn wrong_type_and_unknown_key_are_reported() {
        let p = Config::parse([
            ("QueueDepth", Value::Str("8")),
            ("ProcessingMode", Value::Str("Passive")),
            ("ProcessingMod", Value::Dword(1)),
            ("ProcessingMode", Value::Str("fast")),
        ]);
        assert_eq!(p.config.queue_depth, 64);
        assert_eq!(p.config.processing_mode, ProcessingMode::Passive);
        assert_eq!(
            p.issues,
            [
                Issue {
                    key: KEY_QUEUE_DEPTH,
                    kind: IssueKind::WrongType
                },
                Issue {
                    key: "?",
                    kind: IssueKind::UnknownKey
                },
                Issue {
                    key: KEY_PROCESSING_MODE,
                    kind: IssueKind::WrongType
                },
            ]
        );
    }

    #[test]
    fn ic_service_defaults_to_off_and_parses_each_service() {
        let (c, issues) = IcConfig::parse([]);
        assert_eq!((c, issues.len()), (IcConfig::OFF, 0));
        for s in [
            IcService::Heartbeat,
            IcService::Shutdown,
            IcService::TimeSync,
        ] {
            let (c, issues) = IcConfig::parse([("icservice", Value::Dword(s.as_dword()))]);
            assert_eq!((c.service, issues.len()), (Some(s), 0));
            let (c, _) = IcConfig::parse([("IcService", Value::Str(s.name()))]);
            assert_eq!(c.service, Some(s));
        }
        let (c, _) = IcConfig::parse([
            ("IcService", Value::Dword(2)),
            ("IcService", Value::Dword(0)),
        ]);
        assert_eq!(c.service, None, "0 turns IC mode off; later values win");
    }

    #[test]
    fn device_ic_values_override_service_values() {
        let (service_wide, _) = IcConfig::parse([
            ("IcService", Value::Dword(1)),
            ("IcTimeoutMs", Value::Dword(5_000)),
        ]);
        let (c, issues) = IcConfig::parse_onto(service_wide, [("IcService", Value::Dword(3))]);
        assert!(issues.is_empty());
        assert_eq!(
            c,
            IcConfig {
                service: Some(IcService::TimeSync),
                timeout_ms: 5_000
            }
        );
        let (c, issues) = IcConfig::parse_onto(c, [("IcService", Value::Dword(9))]);
        assert_eq!((c.service, issues.len()), (Some(IcService::TimeSync), 1));
    }

    #[test]
    fn ic_values_are_validated_and_skipped_by_the_bridge_parser() {
        let pairs = [
            ("IcService", Value::Dword(4)),
            ("IcTimeoutMs", Value::Dword(99)),
            ("IcTimeoutMs", Value::Str("5")),
            ("IcService", Value::Str("kvp")),
            ("IcTimeoutMs", Value::Dword(600_000)),
        ];
        let (c, issues) = IcConfig::parse(pairs);
        assert_eq!(
            c,
            IcConfig {
                service: None,
                timeout_ms: 600_000
            }
        );
        let kinds: Vec<_> = issues.iter().map(|i| (i.key, i.kind)).collect();
        assert_eq!(
            kinds,
            [
                (KEY_IC_SERVICE, IssueKind::OutOfRange),
                (KEY_IC_TIMEOUT_MS, IssueKind::OutOfRange),
                (KEY_IC_TIMEOUT_MS, IssueKind::WrongType),
                (KEY_IC_SERVICE, IssueKind::WrongType),
            ]
        );
        let p = Config::parse(pairs);
        assert_eq!((p.config, p.issues.len()), (Config::DEFAULT, 0));
    }

    #[test]
    fn range_bounds_are_inclusive() {
        let p = Config::parse([
            ("QueueDepth", Value::Dword(4096)),
            ("RingBufferPages", Value::Dword(2)),
            ("MaxPacketSize", Value::Dword(Config::ring_payload_limit(2))),
        ]);
        assert!(p.issues.is_empty());
        assert_eq!(p.config.queue_depth, 4096);
        let p = Config::parse([("QueueDepth", Value::Dword(4097))]);
        assert_eq!(p.config.queue_depth, 64);
    }

    #[test]
    fn max_packet_size_that_does_not_fit_the_ring_is_lowered_and_reported() {
        // 16 pages: 15 data pages; one packet carries at most 61,400 payload bytes.
        assert_eq!(Config::ring_payload_limit(16), 15 * 4096 - 40);
        let p = Config::parse([("MaxPacketSize", Value::Dword(1 << 20))]);
        assert_eq!(p.config.max_packet_size, 15 * 4096 - 40);
        assert_eq!(
            p.issues,
            [Issue {
                key: KEY_MAX_PACKET_SIZE,
                kind: IssueKind::DoesNotFitRing
            }]
        );
        let p = Config::parse([("RingBufferPages", Value::Dword(2))]);
        assert_eq!(p.config.max_packet_size, 4056, "the default is lowered too");
        let p = Config::parse([
            ("MaxPacketSize", Value::Dword(1 << 20)),
            ("RingBufferPages", Value::Dword(512)),
        ]);
        assert_eq!((p.config.max_packet_size, p.issues.len()), (1 << 20, 0));
    }
}

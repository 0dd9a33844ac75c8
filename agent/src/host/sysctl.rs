//! Kernel settings at run time: the files under `/proc/sys` (`net.ipv4.ip_forward` is
//! `/proc/sys/net/ipv4/ip_forward`). They are written in place, the only way the kernel
//! takes them, so nothing here is atomic or durable: a setting lasts until reboot. What a
//! setting is at boot lives in a file in `/etc/sysctl.d`, written with
//! [`super::fs::write_atomic`] like any other.

use std::io;
use std::path::PathBuf;

/// The file of the setting `key` (dotted, as `sysctl` names it).
pub(crate) fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

/// The setting's value as the kernel prints it (usually with a trailing newline).
pub(crate) fn read(key: &str) -> io::Result<String> {
    std::fs::read_to_string(path(key))
}

/// Sets `key` to `value` (a newline is added, as `sysctl -w` writes it). A read-only
/// `/proc/sys` (a container) fails with the OS's error; the caller says what to do about it.
pub(crate) fn write(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(path(key), format!("{value}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dotted_key_names_its_file_under_proc_sys() {
        assert_eq!(
            path("net.ipv4.ip_forward"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            path("vm.swappiness"),
            PathBuf::from("/proc/sys/vm/swappiness")
        );
    }

    #[test]
    fn a_setting_reads_as_the_kernel_prints_it() {
        // Readable wherever /proc is mounted, even in a container.
        let v = read("kernel.ostype").unwrap();
        assert_eq!(v.trim(), "Linux");
    }
}

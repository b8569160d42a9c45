# Homebrew formula for netconnect: installs the release tarball that
# scripts/release.sh makes (a universal arm64 + x86_64 binary, the helper
# image archive of the Mac's Docker VM, man pages, completions), so that
# nothing is compiled on the Mac and the first `netconnect up` needs no
# registry. The service block runs what `netconnect service install` runs
# (tests/homebrew_formula.rs checks that the two agree and that this file
# parses).
#
# This file is the template: the sha256 below are placeholders.
# scripts/release.sh writes dist/netconnect.rb, this file with each sha256
# set to the one of the file its url names (tests/release.rs checks them
# against the artifacts); that is the file to copy to the tap.
class Netconnect < Formula
  desc "Reach Docker containers on macOS by IP address through a WireGuard tunnel"
  homepage "https://github.com/netconnect-dev/netconnect"
  license "MIT"

  # The binary is universal; the tarballs differ by the helper image
  # archive, which runs inside the Docker VM, whose architecture is the
  # Mac's: linux/arm64 on Apple Silicon, linux/amd64 on Intel.
  on_arm do
    url "https://github.com/netconnect-dev/netconnect/releases/download/v0.1.0/netconnect-0.1.0-macos-arm64.tar.gz"
    sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  end
  on_intel do
    url "https://github.com/netconnect-dev/netconnect/releases/download/v0.1.0/netconnect-0.1.0-macos-x86_64.tar.gz"
    sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  end

  # The binary's minimum macOS is 11 (LC_BUILD_VERSION, checked by
  # tests/release.rs).
  depends_on macos: :big_sur

  def install
    bin.install "bin/netconnect"
    # bin/netconnect looks for ../share/netconnect/netconnect-helper-linux-<arch>.tar.gz.
    pkgshare.install Dir["share/netconnect/*.tar.gz"]
    man8.install Dir["share/man/man8/*.8"]
    bash_completion.install "etc/bash_completion.d/netconnect"
    zsh_completion.install "share/zsh/site-functions/_netconnect"
    fish_completion.install "share/fish/vendor_completions.d/netconnect.fish"
  end

  service do
    run [opt_bin/"netconnect", "up"]
    require_root true
    keep_alive true
    log_path var/"log/netconnect.log"
    error_log_path var/"log/netconnect.log"
  end

  def caveats
    <<~EOS
      netconnect needs root (it creates a utun interface and routes).
      To start it now and at every boot:
        sudo brew services start netconnect
      Logs: #{var}/log/netconnect.log
    EOS
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/netconnect --version")
    # The LaunchDaemon plan for users without brew services, printed, not run.
    plan = shell_output("#{bin}/netconnect service install --dry-run --binary #{opt_bin}/netconnect")
    assert_match "<string>#{opt_bin}/netconnect</string>", plan
    assert_match "launchctl bootstrap system /Library/LaunchDaemons/dev.netconnect.daemon.plist", plan
    # The test runs unprivileged: up refuses in one line and changes nothing.
    assert_match "must run as root", shell_output("#{bin}/netconnect up 2>&1", 1)
    vm_arch = Hardware::CPU.arm? ? "arm64" : "amd64"
    assert_path_exists pkgshare/"netconnect-helper-linux-#{vm_arch}.tar.gz"
  end
end

# Homebrew formula for netconnect: builds it from source with cargo and
# installs the VM-side helper image as an archive, so that the first
# `netconnect up` needs no registry. The service block runs what
# `netconnect service install` runs (tests/homebrew_formula.rs checks that
# the two agree and that this file parses).
#
# Release checklist: set url/sha256 to the release tarball, attach the two
# archives made by packaging/build-helper-image.sh (on an arm64 and an x86_64
# Linux machine) to the release and set their sha256 below.
class Netconnect < Formula
  desc "Reach Docker containers on macOS by IP address through a WireGuard tunnel"
  homepage "https://github.com/netconnect-dev/netconnect"
  url "https://github.com/netconnect-dev/netconnect/archive/refs/tags/v0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license "MIT"
  head "https://github.com/netconnect-dev/netconnect.git", branch: "main"

  depends_on "rust" => :build
  depends_on :macos

  # The helper runs inside the Docker VM, whose architecture is the Mac's:
  # linux/arm64 on Apple Silicon, linux/amd64 on Intel. Kept compressed:
  # `netconnect up` loads the archive as it is.
  resource "helper-image" do
    on_arm do
      url "https://github.com/netconnect-dev/netconnect/releases/download/v0.1.0/netconnect-helper-0.1.0-linux-arm64.tar.gz",
          using: :nounzip
      sha256 "0000000000000000000000000000000000000000000000000000000000000000"
    end
    on_intel do
      url "https://github.com/netconnect-dev/netconnect/releases/download/v0.1.0/netconnect-helper-0.1.0-linux-amd64.tar.gz",
          using: :nounzip
      sha256 "0000000000000000000000000000000000000000000000000000000000000000"
    end
  end

  def install
    system "cargo", "install", *std_cargo_args
    # bin/netconnect looks for ../share/netconnect/netconnect-helper.tar.gz.
    resource("helper-image").stage do
      pkgshare.install Dir["*.tar.gz"].first => "netconnect-helper.tar.gz"
    end
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
    assert_path_exists pkgshare/"netconnect-helper.tar.gz"
  end
end

//! `keelctl` itself, without a cluster: shell completions cover every verb.

#[tokio::test]
async fn completions_cover_every_verb_for_each_shell() {
    let keelctl = keel_tools::launcher::find_binary("keelctl").unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let output = tokio::process::Command::new(&keelctl).args(["completions", shell]).output().await.unwrap();
        assert!(output.status.success(), "keelctl completions {shell}: {}", String::from_utf8_lossy(&output.stderr));
        let script = String::from_utf8_lossy(&output.stdout);
        for verb in ["cluster", "broker", "topic", "group", "controller", "reset-offsets", "drain"] {
            assert!(script.contains(verb), "the {shell} completions know `{verb}`");
        }
    }
    let output = tokio::process::Command::new(&keelctl).args(["completions", "tcsh"]).output().await.unwrap();
    assert!(!output.status.success(), "an unknown shell is refused");
    assert!(String::from_utf8_lossy(&output.stderr).contains("possible values"), "and the valid ones listed");
}

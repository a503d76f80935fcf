//! Which reply codes a stage may answer, so `check` can refuse a scripted
//! reply no client could make sense of (354 to the greeting, 221 to RCPT,
//! 334 outside AUTH), and point to `raw` for the deliberately impossible.
//!
//! RFC 5321 §4.3.2 lists, per command, the codes a server may send. The
//! table below keeps its success (2yz) and intermediate (3yz) codes, one row
//! per stage: those tell the client to go on to a next step, and a wrong one
//! names a step that does not exist. Failures (4yz, 5yz) are allowed at every
//! stage: RFC 5321 §4.2.1 has a client act on the first digit of a code it
//! does not expect ("proceed as planned, redo, retrench"), §4.3.2 lets 421
//! answer any command, and real receivers use failure codes the list does
//! not name (Postfix answers RCPT with `554 5.7.1 Relay access denied`).

use crate::proto::Stage;

/// One stage and the success and intermediate codes it may answer.
pub struct StageCodes {
    pub stage: Stage,
    /// `None`: any code (a command mailfault does not know, whose replies
    /// no RFC lists here).
    pub codes: Option<&'static [u16]>,
    /// Where the list comes from.
    pub source: &'static str,
}

/// One row per stage, in `Stage::ALL` order.
pub const STAGE_CODES: [StageCodes; 16] = [
    row(Stage::Connect, &[220], "RFC 5321 §4.3.2"),
    row(Stage::Ehlo, &[250], "RFC 5321 §4.3.2"),
    row(Stage::Helo, &[250], "RFC 5321 §4.3.2"),
    row(Stage::Starttls, &[220], "RFC 3207 §4"),
    row(Stage::Auth, &[235, 334], "RFC 4954 §4 and §6"),
    row(Stage::Mail, &[250], "RFC 5321 §4.3.2"),
    row(Stage::Rcpt, &[250, 251], "RFC 5321 §4.3.2"),
    // The stage is also the first BDAT, which gets 250 (RFC 3030 §2).
    row(Stage::Data, &[354, 250], "RFC 5321 §4.3.2 and RFC 3030 §2"),
    row(Stage::Message, &[250], "RFC 5321 §4.3.2"),
    row(Stage::Rset, &[250], "RFC 5321 §4.3.2"),
    row(Stage::Noop, &[250], "RFC 5321 §4.3.2"),
    row(Stage::Vrfy, &[250, 251, 252], "RFC 5321 §4.3.2"),
    row(Stage::Expn, &[250, 252], "RFC 5321 §4.3.2"),
    row(Stage::Help, &[211, 214], "RFC 5321 §4.3.2"),
    row(Stage::Quit, &[221], "RFC 5321 §4.3.2"),
    StageCodes {
        stage: Stage::Unknown,
        codes: None,
        source: "no RFC lists replies to unknown verbs",
    },
];

const fn row(stage: Stage, codes: &'static [u16], source: &'static str) -> StageCodes {
    StageCodes {
        stage,
        codes: Some(codes),
        source,
    }
}

/// The row of a stage.
pub fn for_stage(stage: Stage) -> &'static StageCodes {
    STAGE_CODES
        .iter()
        .find(|r| r.stage == stage)
        .unwrap_or(&STAGE_CODES[STAGE_CODES.len() - 1])
}

impl StageCodes {
    /// True when `code` is a sensible answer at this stage.
    pub fn allows(&self, code: u16) -> bool {
        code >= 400 || self.codes.is_none_or(|c| c.contains(&code))
    }

    /// What the stage allows, for a message: "220 (RFC 5321 §4.3.2)".
    pub fn describe(&self) -> String {
        let codes: Vec<String> = self
            .codes
            .unwrap_or_default()
            .iter()
            .map(u16::to_string)
            .collect();
        format!("{} ({})", codes.join(" or "), self.source)
    }
}

/// The first stage of `stages` that cannot answer `code`.
pub fn first_refusing(stages: &[Stage], code: u16) -> Option<&'static StageCodes> {
    stages
        .iter()
        .map(|s| for_stage(*s))
        .find(|r| !r.allows(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_stage_in_order() {
        let stages: Vec<Stage> = STAGE_CODES.iter().map(|r| r.stage).collect();
        assert_eq!(stages, Stage::ALL.to_vec());
    }

    #[test]
    fn positive_codes_only_where_they_make_sense() {
        assert!(!for_stage(Stage::Connect).allows(354));
        assert!(!for_stage(Stage::Rcpt).allows(221));
        assert!(!for_stage(Stage::Mail).allows(334));
        assert!(for_stage(Stage::Auth).allows(334));
        assert!(for_stage(Stage::Data).allows(354));
        assert!(for_stage(Stage::Rcpt).allows(554));
        assert!(for_stage(Stage::Quit).allows(421));
        assert!(for_stage(Stage::Unknown).allows(299));
        assert_eq!(
            first_refusing(&[Stage::Mail, Stage::Rcpt, Stage::Data], 250).map(|r| r.stage),
            None
        );
        assert_eq!(
            first_refusing(&[Stage::Mail, Stage::Quit], 250).map(|r| r.stage),
            Some(Stage::Quit)
        );
    }
}

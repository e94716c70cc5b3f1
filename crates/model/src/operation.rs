//! Operations (named after Exchange's wherever Exchange has one), logon types and results.
//! The string names are part of the canonical encoding and the public JSON: never rename one.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{given}`; expected one of: {expected}")]
pub struct ParseEnumError {
    pub kind: &'static str,
    pub given: String,
    pub expected: String,
}

macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, $readable:literal; )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The stable name used in JSON, the canonical encoding and the CLI.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $text, )+ }
            }

            /// A name for people: "Opened message" rather than `MessageBind`.
            pub fn readable(self) -> &'static str {
                match self { $( $name::$variant => $readable, )+ }
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $( if s.eq_ignore_ascii_case($text) { return Ok($name::$variant); } )+
                Err(ParseEnumError {
                    kind: $kind,
                    given: s.to_string(),
                    expected: [$( $text ),+].join(", "),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// What was done. One record per command: an operation on many messages is one record
    /// with an item list.
    Operation, "operation" {
        MailboxLogin => "MailboxLogin", "Signed in to mailbox";
        MailboxLogout => "MailboxLogout", "Signed out of mailbox";
        FolderBind => "FolderBind", "Opened folder";
        MessageBind => "MessageBind", "Opened message";
        Copy => "Copy", "Copied messages";
        Move => "Move", "Moved messages";
        MoveToDeletedItems => "MoveToDeletedItems", "Moved to Deleted Items";
        SoftDelete => "SoftDelete", "Deleted messages (recoverable)";
        HardDelete => "HardDelete", "Purged messages";
        Create => "Create", "Created message";
        Update => "Update", "Changed message";
        Send => "Send", "Sent message";
        SendAs => "SendAs", "Sent as another mailbox";
        SendOnBehalf => "SendOnBehalf", "Sent on behalf of another mailbox";
        UpdateFolderPermissions => "UpdateFolderPermissions", "Changed folder permissions";
        UpdateCalendarDelegation => "UpdateCalendarDelegation", "Changed calendar delegation";
        UpdateInboxRules => "UpdateInboxRules", "Changed inbox rules";
        SearchQueryInitiated => "SearchQueryInitiated", "Searched mailbox";
        FolderCreate => "FolderCreate", "Created folder";
        FolderDelete => "FolderDelete", "Deleted folder";
        FolderRename => "FolderRename", "Renamed folder";
        Deliver => "Deliver", "Delivered message";
        AuditPolicyChange => "AuditPolicyChange", "Changed audit policy";
        AuditBypassChange => "AuditBypassChange", "Changed audit bypass";
        AuditLogSearch => "AuditLogSearch", "Searched audit log";
        AuditLogExport => "AuditLogExport", "Exported audit log";
    }
}

impl Operation {
    /// Operations of the audit system itself. They are recorded whatever the policy says:
    /// turning auditing off, bypassing it, or reading it must always leave a trace.
    pub fn is_audit_system(self) -> bool {
        matches!(
            self,
            Operation::AuditPolicyChange
                | Operation::AuditBypassChange
                | Operation::AuditLogSearch
                | Operation::AuditLogExport
        )
    }
}

string_enum! {
    /// How the actor reached the mailbox.
    LogonType, "logon type" {
        Owner => "Owner", "Owner";
        Delegate => "Delegate", "Delegate";
        Admin => "Admin", "Administrator";
    }
}

string_enum! {
    /// Whether the operation worked.
    OperationResult, "result" {
        Succeeded => "Succeeded", "Succeeded";
        Failed => "Failed", "Failed";
        PartiallySucceeded => "PartiallySucceeded", "Partially succeeded";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for op in Operation::ALL {
            assert_eq!(op.as_str().parse::<Operation>().unwrap(), *op);
        }
        let err = "ReadMail".parse::<Operation>().unwrap_err();
        assert!(err.to_string().contains("unknown operation `ReadMail`"));
        assert!(err.to_string().contains("MessageBind"));
    }

    #[test]
    fn parsing_ignores_case() {
        assert_eq!(
            "messagebind".parse::<Operation>().unwrap(),
            Operation::MessageBind
        );
        assert_eq!(
            "delegate".parse::<LogonType>().unwrap(),
            LogonType::Delegate
        );
    }
}

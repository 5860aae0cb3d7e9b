//! Message type bytes by direction: the same byte means different messages each way
//! (`b'D'` is Describe from a client and DataRow from a server, `b'E'` Execute and
//! ErrorResponse, `b'C'` Close and CommandComplete), so code names the direction too.
//! See <https://www.postgresql.org/docs/15/protocol-message-formats.html>.

/// What a client (frontend) sends.
pub mod frontend {
    pub const BIND: u8 = b'B';
    pub const CLOSE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const PARSE: u8 = b'P';
    /// PasswordMessage, SASLInitialResponse and SASLResponse.
    pub const PASSWORD: u8 = b'p';
    pub const QUERY: u8 = b'Q';
    pub const SYNC: u8 = b'S';
    pub const TERMINATE: u8 = b'X';
    /// A whole Terminate message: the type and a length of 4, no body.
    pub const TERMINATE_MESSAGE: [u8; 5] = [TERMINATE, 0, 0, 0, 4];
}

/// What a server (backend) sends.
pub mod backend {
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const DATA_ROW: u8 = b'D';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NO_DATA: u8 = b'n';
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const READY_FOR_QUERY: u8 = b'Z';
}

/// Transaction status bytes of ReadyForQuery.
pub mod status {
    pub const IDLE: u8 = b'I';
    pub const IN_TRANSACTION: u8 = b'T';
}

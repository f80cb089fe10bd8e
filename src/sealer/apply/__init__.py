"""The engine: desired vs observed state -> Plan -> execution with journal, lock and progress."""

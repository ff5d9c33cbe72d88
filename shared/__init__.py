"""Hunt Relay: runs Microsoft Defender advanced hunting queries from a queue and delivers the results."""

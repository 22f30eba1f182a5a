package wecomsim

import (
	"fmt"
	"strings"
)

// The builders below produce the plaintext XML WeCom encrypts into a
// callback, field for field as its docs show: strings in CDATA, numbers bare.

// TextXML is a text message from fromUser to the app agentID of corp toCorp.
func TextXML(toCorp, fromUser, content string, msgID int64, createTime int64, agentID int64) []byte {
	return fmt.Appendf(nil, "<xml><ToUserName>%s</ToUserName><FromUserName>%s</FromUserName>"+
		"<CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>%s</Content>"+
		"<MsgId>%d</MsgId><AgentID>%d</AgentID></xml>",
		cdata(toCorp), cdata(fromUser), createTime, cdata(content), msgID, agentID)
}

// EventXML is an event such as "subscribe", "unsubscribe" or "enter_agent".
// Events carry no MsgId, which is why the service dedupes them differently.
func EventXML(toCorp, fromUser, event string, createTime, agentID int64) []byte {
	eventKey := ""
	if event == "enter_agent" {
		eventKey = "<EventKey><![CDATA[]]></EventKey>"
	}
	return fmt.Appendf(nil, "<xml><ToUserName>%s</ToUserName><FromUserName>%s</FromUserName>"+
		"<CreateTime>%d</CreateTime><MsgType><![CDATA[event]]></MsgType><Event>%s</Event>%s"+
		"<AgentID>%d</AgentID></xml>",
		cdata(toCorp), cdata(fromUser), createTime, cdata(event), eventKey, agentID)
}

// MediaXML is an image, voice, video or file message. Media IDs derive from
// msgID, so the same arguments give the same XML; the PicUrl host is under
// .invalid, so a service that fetches it fails fast instead of reaching out. "file" is not among the
// app-callback types WeCom documents; it is built like the others, with a
// MediaId only, for services that must refuse what they do not know.
func MediaXML(toCorp, fromUser, msgType string, msgID, createTime, agentID int64) []byte {
	mediaID := fmt.Sprintf("media_%s_%d", msgType, msgID)
	var fields string
	switch msgType {
	case "image":
		fields = fmt.Sprintf("<PicUrl>%s</PicUrl><MediaId>%s</MediaId>",
			cdata(fmt.Sprintf("https://wecomsim.invalid/pic/%d", msgID)), cdata(mediaID))
	case "voice":
		fields = fmt.Sprintf("<MediaId>%s</MediaId><Format><![CDATA[amr]]></Format>", cdata(mediaID))
	case "video":
		fields = fmt.Sprintf("<MediaId>%s</MediaId><ThumbMediaId>%s</ThumbMediaId>",
			cdata(mediaID), cdata(mediaID+"_thumb"))
	default:
		fields = fmt.Sprintf("<MediaId>%s</MediaId>", cdata(mediaID))
	}
	return fmt.Appendf(nil, "<xml><ToUserName>%s</ToUserName><FromUserName>%s</FromUserName>"+
		"<CreateTime>%d</CreateTime><MsgType>%s</MsgType>%s<MsgId>%d</MsgId><AgentID>%d</AgentID></xml>",
		cdata(toCorp), cdata(fromUser), createTime, cdata(msgType), fields, msgID, agentID)
}

// cdata wraps s in CDATA. A "]]>" inside s would end the section early, so
// it is split across two sections, the standard escape.
func cdata(s string) string {
	return "<![CDATA[" + strings.ReplaceAll(s, "]]>", "]]]]><![CDATA[>") + "]]>"
}
